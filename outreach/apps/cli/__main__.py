"""`python -m outreach.apps.cli` runs the `outreach` command (bench/send.py starts the sandbox so)."""

from outreach.apps.cli import main

main()
