"""The GLUE room: data, metrics, evaluation of a deployed encoder, its results page, and fine-tuning."""
