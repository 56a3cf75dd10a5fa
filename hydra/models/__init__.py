"""Which models the network knows (``models.catalog.json``) and where their weights come from.
Describes models; does not load or run them."""
