# syntax=docker/dockerfile:1
# The cmmd_dist image: Ray 2.60 on Python 3.11 with the package installed, for every node of a cluster
# (cluster/aws.yaml, cluster/kuberay/) and for `ray job submit` entrypoints.
#
#   docker build -t cmmd-dist:0.1.0 .                                              # CPU, torch 2.13.0 CPU wheel
#   docker build --build-arg VARIANT=gpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t cmmd-dist:0.1.0-gpu .
#   docker run --rm cmmd-dist:0.1.0 cmmd-dist --help
#
# No secret is baked in: S3 access comes from the node's IAM role or the pod's service account, the Ray
# token and the MLflow credentials from the environment at run time (see cluster/SECURITY.md).
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
# cpu | gpu (gpu: the CUDA image; pair it with TORCH_INDEX_URL=https://pypi.org/simple or a CUDA index)
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# the base image's own non-root user `ray` (uid 1000, group users = 100), numeric so that Kubernetes
# runAsNonRoot can check it; it owns the conda under /home/ray/anaconda3
USER 1000:100
RUN mkdir -p /home/ray/cmmd
WORKDIR /home/ray/cmmd

# Layers from the least to the most often changed: torch (the biggest), the dependencies listed in
# pyproject.toml, then the package itself. Ray is already in the base image at the version above.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY --chown=1000:100 pyproject.toml README.md ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY --chown=1000:100 cmmd_dist ./cmmd_dist
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build cmmd_dist.egg-info \
    && python -c "import cmmd_dist, torch; assert torch.__version__.startswith('${TORCH_VERSION}')"

# the search spaces are package data (cmmd_dist/search_spaces): `python -m cmmd_dist.tune --dataset X` finds them anywhere
ENV PYTHONUNBUFFERED=1
HEALTHCHECK --interval=60s --timeout=30s --start-period=30s --retries=3 CMD ["python", "-c", "import cmmd_dist"]
CMD ["cmmd-dist", "--help"]
