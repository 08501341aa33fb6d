FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY clinic ./clinic
COPY workers ./workers
COPY templates ./templates
COPY migrations ./migrations
RUN pip install --no-cache-dir -c constraints.txt -e .
RUN useradd --system --home /app clinic && chown -R clinic /app
USER clinic
EXPOSE 8000
CMD ["clinic", "serve", "--host", "0.0.0.0", "--port", "8000"]
