"""FHIR R4 in (DESIGN.md §13): Bundles and Bulk Data NDJSON → patients and events, and the Bulk
Data `$export` client that fetches them.

- files: finding and streaming the files; resources: the narrow reading of each resource
- codemap (+ codemap.csv): code system + code → event kind, each row citing its value set
- importer: `import_fhir`, through the CSV import's checks and writers; report: counts and errors
- bulk, auth: the `$export` client and SMART Backend Services tokens
"""
