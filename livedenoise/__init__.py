"""livedenoise: real-time, acquisition-side self-supervised denoising.

The package layout follows the data path (docs/architecture.md). Modules that
moved in 0.2 can still be imported under their old names for a while: the old
name is an alias of the new module (the same object, not a copy), and importing
it warns with a DeprecationWarning that names the new place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.2.0"

MOVED: dict[str, str] = {
    "livedenoise.models.readers": "livedenoise.io.readers",
    "livedenoise.models.readers_scanimage": "livedenoise.io.readers_scanimage",
    "livedenoise.models.scanimage_tiff": "livedenoise.io.scanimage_tiff",
    "livedenoise.models.readers_ephys": "livedenoise.io.readers_ephys",
    "livedenoise.models.writers": "livedenoise.io.writers",
    "livedenoise.models.writers_ephys": "livedenoise.io.writers_ephys",
    "livedenoise.models.interp2d": "livedenoise.models.nets.interp2d",
    "livedenoise.models.cad3d": "livedenoise.models.nets.cad3d",
    "livedenoise.models.interp_ephys": "livedenoise.models.nets.interp_ephys",
    "livedenoise.models.block_ephys": "livedenoise.models.nets.block_ephys",
    "livedenoise.models.baselines": "livedenoise.models.nets.classic",
    "livedenoise.models.train": "livedenoise.train.imaging",
    "livedenoise.models.train_ephys": "livedenoise.train.ephys",
    "livedenoise.models.samples": "livedenoise.train.samples",
    "livedenoise.models.simulate": "livedenoise.sim.imaging",
    "livedenoise.models.simulate_ephys": "livedenoise.sim.ephys",
    "livedenoise.models.metrics": "livedenoise.sim.metrics",
    "livedenoise.models.denoise": "livedenoise.stream.offline",
    "livedenoise.models.denoise_ephys": "livedenoise.stream.ephys",
    "livedenoise.export.engine": "livedenoise.export.engines",
    "livedenoise.export.tensorrt_engine": "livedenoise.export.engines.tensorrt",
    "livedenoise.stream.receiver": "livedenoise.stream.sources.frames",
    "livedenoise.stream.openephys.ingest": "livedenoise.stream.sources.openephys",
    "livedenoise.stream.scanimage.tiff_source": "livedenoise.stream.sources.scanimage_tiff",
    "livedenoise.stream.outputs": "livedenoise.stream.sinks.publisher",
    "livedenoise.stream.recorder": "livedenoise.stream.sinks.recorder",
    "livedenoise.stream.openephys.ephys_socket": "livedenoise.stream.sinks.ephys_socket",
    "livedenoise.stream.openephys.zmq_out": "livedenoise.stream.sinks.zmq_interface_out",
    "livedenoise.stream.protocol": "livedenoise.stream.protocols.frames",
    "livedenoise.stream.openephys.zmq_interface": "livedenoise.stream.protocols.zmq_interface",
}
"""Old module name -> where the module lives now."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module name to the module at its new place (see MOVED)."""

    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:  # the module at its new place is already executed
        return None


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
