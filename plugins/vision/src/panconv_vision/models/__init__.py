"""Vision models. Nothing is imported here: the plugin registers each model lazily
(``panconv_vision.models.convnext:convnext_tiny``), so listing models imports no torch."""
