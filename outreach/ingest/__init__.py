"""Patients and clinical events in: roster and events CSV files (FHIR R4 joins here)."""
