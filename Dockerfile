# SegCAM Explorer: the Streamlit app with the built-in model and sample tiles.
#   CPU (default):  docker build -t segcam .
#   CUDA:           docker build -t segcam:cuda --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#   + transformers and MONAI model folders: add --build-arg EXTRAS=1
#   Run:            docker run -p 8501:8501 -v "$PWD/my_models:/models:ro" -v "$PWD/slides:/slides:ro" segcam
# torch/torchvision come from PyTorch's CPU index by default; PyPI's torch==2.14.1 is the CUDA
# build, whose CUDA-only parts (nvidia-* libraries, triton) are 4.0 GiB of its 7.04 GB image
# (du -sc .venv/lib/python3.11/site-packages/nvidia* triton, 2026-12-01).
# The versions are the exact pins of requirements.txt, and what they pull in those of constraints.txt
# (the tested venv's: scripts/lock.py). scripts/test_docker.sh builds and tries it.
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEGCAM_MODELS_DIR=/models \
    SEGCAM_SLIDES_DIR=/slides \
    SEGCAM_BATCH_DIR=/batch_out \
    MPLCONFIGDIR=/tmp/matplotlib \
    DASK_TEMPORARY_DIRECTORY=/tmp

RUN useradd --create-home --uid 10001 segcam
WORKDIR /app

COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        "torch==$(sed -n 's/^torch==//p' requirements.txt)" \
        "torchvision==$(sed -n 's/^torchvision==//p' requirements.txt)" \
    && pip install --no-cache-dir -r requirements.txt -c constraints.txt
# The optional model kinds (a transformers folder, a MONAI factory: requirements-extras.txt), on request:
#   docker build --build-arg EXTRAS=1 -t segcam:extras .
ARG EXTRAS=""
COPY requirements-extras.txt ./
RUN if [ -n "${EXTRAS}" ]; then pip install --no-cache-dir -r requirements-extras.txt -c constraints.txt; fi

COPY cam_core/ cam_core/
COPY ui/ ui/
COPY pages/ pages/
COPY assets/ assets/
COPY samples/ samples/
COPY models/ models/
COPY .streamlit/ .streamlit/
COPY app.py ./

# The code stays root's (read-only to the server); only the output volume is the server's to write.
# Any --user works too (batch into a host folder: --user "$(id -u):$(id -g)").
RUN mkdir -p /models /slides /batch_out && chown segcam:segcam /batch_out
VOLUME ["/models", "/slides", "/batch_out"]
USER 10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read() != b'ok')"]
# ui.serve: streamlit run app.py, plus loading the model while the server starts.
CMD ["python", "-m", "ui.serve", "--server.port=8501", "--server.address=0.0.0.0"]
