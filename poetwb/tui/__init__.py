"""The Textual workbench. It drives poetwb.core and holds no model or training logic of its own."""
