"""The registry: plugin discovery, hardware probe, layout conversion (and, later, selection and the zoo)."""

from ._discovery import BackendEntry as BackendEntry
from ._discovery import PluginRecord as PluginRecord
from ._discovery import Registry as Registry
from ._discovery import backend_for as backend_for
from ._discovery import convert_layout as convert_layout
from ._discovery import get_registry as get_registry
from ._discovery import load_registry as load_registry
from ._discovery import make_plugin_manager as make_plugin_manager
from ._discovery import set_registry as set_registry
from ._hardware import detect_hardware as detect_hardware
from ._layouts import Converter as Converter
from ._layouts import LayoutGraph as LayoutGraph

__all__ = [
    "BackendEntry",
    "Converter",
    "LayoutGraph",
    "PluginRecord",
    "Registry",
    "backend_for",
    "convert_layout",
    "detect_hardware",
    "get_registry",
    "load_registry",
    "make_plugin_manager",
    "set_registry",
]
