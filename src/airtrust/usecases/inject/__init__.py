"""``airtrust inject serve``: pods that trust the CA at admission (webhook + bundles)."""
