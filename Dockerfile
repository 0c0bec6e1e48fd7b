# Production image for the Social CRM: gunicorn serves the dashboard; the same image runs the
# Celery worker and beat (see docker-compose.yml).
FROM python:3.11-slim

# gunicorn takes its worker count from WEB_CONCURRENCY; override it at run time to suit the host.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_ENV=production \
    SCRM_DATA_DIR=/data \
    WEB_CONCURRENCY=3

WORKDIR /app

RUN groupadd --system --gid 10001 scrm \
    && useradd --system --uid 10001 --gid scrm --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin scrm

# Runtime dependencies only; the test and lint tools live in requirements-dev.txt.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# Production settings refuse to load without these three, so give collectstatic throwaway
# values that exist only for this step. The data folder is pointed at a scratch directory so
# nothing created while importing the settings ends up in the image's /data.
RUN SECRET_KEY=collectstatic-only \
    ALLOWED_HOSTS=localhost \
    SCRM_ENCRYPTION_KEYS=PGrS3WApSwnzG6c6vk-oN8MkXoB_3ftlGVzm90fJJfg= \
    SCRM_DATA_DIR=/tmp/scrm-build-data \
    python manage.py collectstatic --noinput \
    && rm -rf /tmp/scrm-build-data

# The application code stays owned by root (read-only to the app); only /data is writable.
RUN mkdir -p /data && chown scrm:scrm /data
VOLUME ["/data"]

USER scrm

EXPOSE 8000

CMD ["gunicorn", "scrm.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
