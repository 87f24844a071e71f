"""hfwatchd: verify hand-downloaded Hugging Face files the moment they finish downloading."""

__version__ = "0.1.0"
