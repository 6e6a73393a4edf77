"""The registry: plugin discovery, the hardware probe, layout conversion, selection, the bench and the zoo."""

from ._bench import run_bench as run_bench
from ._cache import SelectionCache as SelectionCache
from ._cards import ModelCard as ModelCard
from ._choose import describe_selection as describe_selection
from ._choose import infer_backend as infer_backend
from ._choose import precision_fields as precision_fields
from ._choose import train_chooser as train_chooser
from ._convert import convert_checkpoint as convert_checkpoint
from ._convert import prove_conversion as prove_conversion
from ._discovery import OWN_DISTRIBUTION as OWN_DISTRIBUTION
from ._discovery import Registry as Registry
from ._discovery import convert_layout as convert_layout
from ._discovery import get_card as get_card
from ._discovery import get_cards as get_cards
from ._discovery import get_registry as get_registry
from ._discovery import load_registry as load_registry
from ._discovery import make_plugin_manager as make_plugin_manager
from ._discovery import set_registry as set_registry
from ._entries import StoredCard as StoredCard
from ._entries import ZooEntry as ZooEntry
from ._errors import ModelIntegrityError as ModelIntegrityError
from ._errors import UnknownModelError as UnknownModelError
from ._hardware import detect_hardware as detect_hardware
from ._layouts import Converter as Converter
from ._layouts import LayoutGraph as LayoutGraph
from ._recipes import CardRun as CardRun
from ._recipes import train_card as train_card
from ._records import BackendEntry as BackendEntry
from ._records import PluginRecord as PluginRecord
from ._select import Candidate as Candidate
from ._select import Job as Job
from ._select import Selection as Selection
from ._select import select_backend as select_backend
from ._store import Store as Store
from ._store import quatrain_home as quatrain_home
from ._store import resolve_checkpoint as resolve_checkpoint
from ._table import auto_backend as auto_backend

__all__ = [
    "OWN_DISTRIBUTION",
    "BackendEntry",
    "Candidate",
    "CardRun",
    "Converter",
    "Job",
    "LayoutGraph",
    "ModelCard",
    "ModelIntegrityError",
    "PluginRecord",
    "Registry",
    "Selection",
    "SelectionCache",
    "Store",
    "StoredCard",
    "UnknownModelError",
    "ZooEntry",
    "auto_backend",
    "convert_checkpoint",
    "convert_layout",
    "describe_selection",
    "detect_hardware",
    "get_card",
    "get_cards",
    "get_registry",
    "infer_backend",
    "load_registry",
    "make_plugin_manager",
    "precision_fields",
    "prove_conversion",
    "quatrain_home",
    "resolve_checkpoint",
    "run_bench",
    "select_backend",
    "set_registry",
    "train_card",
    "train_chooser",
]
