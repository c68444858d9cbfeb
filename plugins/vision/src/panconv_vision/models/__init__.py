"""Vision models. Nothing is imported here: the plugin registers each model lazily
(``panconv_vision.models.convnext:ConvNeXt``; size variants are that class with arguments fixed in
plugin.py), so listing models imports no torch."""
