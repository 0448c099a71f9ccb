"""One module per pane of the workbench; each drives poetwb.core through workers and messages."""
