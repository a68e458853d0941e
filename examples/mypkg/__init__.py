"""An example package with a model of one's own, for README's "Your own model" section."""
