"""The headless core of poetwb: models, data, training, generation, evaluation. No Textual import below here."""
