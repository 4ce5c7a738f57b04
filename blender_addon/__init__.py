"""PanSt3R for Blender: unordered photos -> a 3D panoptic scene (one point object per segment, cameras).

Registration only. ``bpy`` is imported inside register/unregister so the
bpy-free layers (``client``, ``bundle``) can be imported and tested in plain
Python. The add-on never imports torch: the engine runs in its own process.
"""

from __future__ import annotations


def _modules():
    from . import preferences, settings
    from .operators import engine, export_bundle, import_bundle, instances, layout, meshes, photos, render_view, run
    from .ui import panel

    return (
        preferences,
        settings,
        photos,
        import_bundle,
        export_bundle,
        run,
        engine,
        instances,
        layout,
        meshes,
        render_view,
        panel,
    )


def register() -> None:
    import bpy

    from . import settings
    from .operators.export_bundle import menu_export
    from .operators.import_bundle import menu_import

    for module in _modules():
        for cls in module.classes:
            bpy.utils.register_class(cls)
    settings.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(menu_import)
    bpy.types.TOPBAR_MT_file_export.append(menu_export)


def unregister() -> None:
    import bpy

    from . import runtime, settings
    from .operators import run
    from .operators.export_bundle import menu_export
    from .operators.import_bundle import menu_import

    if bpy.app.timers.is_registered(run.tick):
        bpy.app.timers.unregister(run.tick)
    runtime.shutdown()
    bpy.types.TOPBAR_MT_file_export.remove(menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    settings.unregister_properties()
    for module in reversed(_modules()):
        for cls in reversed(module.classes):
            bpy.utils.unregister_class(cls)
