# One image for every Switchyard service; the command picks the service:
#   python -m services.ingress | services.router | services.providers --provider X | services.ledger | services.budget
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY switchyard ./switchyard
COPY services ./services
COPY protos ./protos
RUN pip install --no-cache-dir uv && uv pip install --system --no-cache .
RUN useradd --system --uid 10001 switchyard && mkdir -p /data && chown switchyard /data
USER switchyard
ENV SWITCHYARD_HOST=0.0.0.0 SWITCHYARD_OPS_HOST=0.0.0.0 SWITCHYARD_OPS_PORT=9000 SWITCHYARD_DATA_DIR=/data
EXPOSE 8080 9000
CMD ["python", "-m", "services.ingress"]
