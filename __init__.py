"""ComfyUI entry point of the SINGER node pack (V3 schema): ``comfy_entrypoint`` and ``WEB_DIRECTORY``.

Outside ComfyUI (pytest collecting tests/, packaging tools) ``comfy_api`` is absent and this
module imports cleanly and exposes nothing but ``WEB_DIRECTORY``.
"""

WEB_DIRECTORY = "./web"

try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI)
except ImportError:
    __all__ = ["WEB_DIRECTORY"]
else:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
