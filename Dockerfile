# The one image every outreach service runs (web, worker, scheduler, migrate); docker-compose.yml
# picks the command. Runtime dependencies only: the test extras are never installed here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build from a throw-away copy of the source: the image keeps the installed package, not the tree.
# campaigns/ and samples/ go in as the wheel's package data, so `outreach demo` runs in the image.
COPY pyproject.toml README.md /tmp/src/
COPY outreach /tmp/src/outreach
COPY workers /tmp/src/workers
COPY campaigns /tmp/src/campaigns
COPY samples /tmp/src/samples
RUN pip install /tmp/src && rm -rf /tmp/src

# A fixed, unprivileged user; /app is its working directory (celery beat keeps its schedule file here).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin outreach \
    && mkdir /app && chown outreach:outreach /app
WORKDIR /app
# The shipped campaigns; docker-compose.yml mounts ./campaigns over them so a care team's edits apply.
COPY --chown=outreach:outreach campaigns /app/campaigns
ENV OUTREACH_CAMPAIGNS_DIR=/app/campaigns

USER outreach
EXPOSE 8000
CMD ["outreach", "web", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
