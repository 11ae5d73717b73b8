"""Entry points: the CLI, the web app (webhooks and workspace) and the demo. Only these import
click, rich, fastapi/starlette, jinja2 or celery; they read settings and pass them down."""
