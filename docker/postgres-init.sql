-- One PostgreSQL, three databases: MLflow runs, MLflow users (basic auth), Optuna studies.
CREATE DATABASE mlflow_auth;
CREATE DATABASE optuna;
