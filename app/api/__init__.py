"""HTTP routes, one module per resource. Thin: they call stages, they do no work themselves."""
