"""jobwidget: watch, sync and analyse cloud fine-tuning jobs from a Jupyter notebook."""
