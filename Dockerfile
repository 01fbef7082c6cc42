# The riverrun image: every riverrun service of docker-compose.yml runs `riverrun COMMAND`
# from it, configured by RIVERRUN_* variables (riverrun/settings.py).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN python -m venv /opt/riverrun && /opt/riverrun/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/riverrun/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/riverrun /opt/riverrun
RUN useradd --system --create-home --uid 10001 riverrun \
    && install -d -o riverrun -m 700 /home/riverrun/.local/state/riverrun
USER riverrun
WORKDIR /home/riverrun
# /metrics of the learn flow (one port per process), the trigger service, the gRPC server;
# and gRPC itself.
EXPOSE 9800 9801 9850 9900 50051
ENTRYPOINT ["riverrun"]
CMD ["--help"]
