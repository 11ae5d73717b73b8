"""Storage: the typed models, engines and sessions, migrations, and the SQL idioms (status sets,
dialect upserts, COPY) that every other part imports instead of writing its own."""
