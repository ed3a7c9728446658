"""The plugin contract and its loader, defined in ringx_suite/plugins.py (the cost model and analysis load plugins
too); the drivers import it under this name."""

from ringx_suite.plugins import FLAG_HELP, GROUP, Plugin, PluginError, installed, load, of, parse_spec

__all__ = ["FLAG_HELP", "GROUP", "Plugin", "PluginError", "installed", "load", "of", "parse_spec"]
