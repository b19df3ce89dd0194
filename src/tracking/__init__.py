"""The MLflow store: where runs go, writing to it through outages, what runs and metrics
are called, and the mlflow ui links to them."""
