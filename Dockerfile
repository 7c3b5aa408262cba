# The deployserver server image (docker-compose.yml builds it). Offline like the cell image:
# scripts/build-server-image.sh downloads the wheels into wheelhouse/server first, and the
# build installs from there only (pip --no-index), so it can run with --network none.
# BASE_IMAGE needs only `python3 -m venv`: python:3.11-slim or deployserver/base:bookworm.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
COPY wheelhouse/server/ /build/wheels/
RUN python3 -m venv /opt/deployserver/venv \
 && /opt/deployserver/venv/bin/pip install --no-index --find-links /build/wheels \
        -r /build/wheels/requirements.txt
COPY . /opt/deployserver/src/
# Editable: the server finds migrations/ and serving_cell/Dockerfile beside its package.
RUN /opt/deployserver/venv/bin/pip install --no-index --find-links /build/wheels --no-deps \
        -e /opt/deployserver/src \
 && /opt/deployserver/venv/bin/python -m compileall -q /opt/deployserver/src

FROM ${BASE_IMAGE}
ARG SERVER_UID=10000
ARG SERVER_GID=10000
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/deployserver/venv \
    PATH=/opt/deployserver/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEPLOYSERVER_DATA_DIR=/var/lib/deployserver \
    DEPLOYSERVER_HOST=0.0.0.0 \
    DEPLOYSERVER_PORT=8000
RUN groupadd --system --gid "${SERVER_GID}" deployserver \
 && useradd --system --uid "${SERVER_UID}" --gid deployserver --home-dir /var/lib/deployserver \
        --shell /usr/sbin/nologin deployserver \
 && mkdir -p /var/lib/deployserver \
 && chown deployserver:deployserver /var/lib/deployserver
COPY --from=build /opt/deployserver /opt/deployserver
LABEL org.opencontainers.image.title="deployserver" deployserver.image="server"
VOLUME ["/var/lib/deployserver"]
WORKDIR /var/lib/deployserver
USER ${SERVER_UID}:${SERVER_GID}
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["deployserver"]
CMD ["serve", "--host", "0.0.0.0"]
