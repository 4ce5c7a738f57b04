"""Panels of the PanSt3R add-on."""
