# capi-stream: the pipeline, the emulator and the tools in one image (no Java: the broker runs elsewhere).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY schemas ./schemas
COPY config ./config
# The package data link stream/data/conversion_event.avsc points at schemas/, copied above.
RUN pip install --no-cache-dir . && useradd --system --uid 10001 capi
USER capi
ENTRYPOINT ["capi-stream"]
CMD ["--help"]
