# The driftline worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY detectors ./detectors
COPY streams ./streams
# driftline/ links to the three folders: they install as driftline.detectors, ...
COPY driftline ./driftline
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["driftline"]
CMD ["worker"]
