# One image for every Linegate service; compose picks the app factory with APP_FACTORY.
# Build: docker build -t linegate .   (the lock file pins every dependency)
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
COPY cli cli
RUN uv sync --frozen --no-dev --all-packages --no-editable

FROM python:3.11-slim
RUN useradd --system --uid 10001 linegate
COPY --from=build /src/.venv /opt/linegate
ENV PATH=/opt/linegate/bin:$PATH LINEGATE_DATA_DIR=/var/lib/linegate
# Every path compose mounts a named volume on exists here, owned by linegate: Docker copies a
# path's owner into a new empty volume, and creates a missing one owned by root.
RUN mkdir -p /var/lib/linegate/keys /var/lib/linegate/registry \
        /var/lib/linegate/incident-signing /var/lib/linegate/incident-public \
    && chown -R linegate /var/lib/linegate && chmod 700 /var/lib/linegate/incident-signing
USER linegate
EXPOSE 8000
CMD ["sh", "-c", "exec uvicorn ${APP_FACTORY} --factory --host 0.0.0.0 --port ${LINEGATE_PORT:-8000}"]
