"""What the architecture checker needs to know of a module, as plain names.

The checker reads source code, not live objects, so it takes names: a module's name, where its contract
is (`"splitstone.modules.auth.api:AuthApi"`), the contracts it depends on and the events it subscribes to.
`ModuleSpec.of` derives that from a `Module` declaration; tests write specs by hand for fake packages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from splitstone.kernel.module import Module

MODULES_PACKAGE = "modules"
KERNEL_PACKAGE = "kernel"
CONTRACT_MODULE = "api"
DECLARATION_MODULE = "module"
COMPOSITION_ROOT = "bootstrap"


def reference(cls: type) -> str:
    """`"package.module:QualName"`: where a class is defined, in the form the checker works with."""
    return f"{cls.__module__}:{cls.__qualname__}"


def split_reference(ref: str) -> tuple[str, str]:
    """`("package.module", "QualName")` from `"package.module:QualName"`."""
    module, sep, qualname = ref.partition(":")
    if not sep or not module or not qualname:
        raise ValueError(f"{ref!r} is not a reference of the form 'package.module:QualName'")
    return module, qualname


@dataclass(frozen=True)
class ModuleSpec:
    """One module as the checker sees it."""

    name: str
    contract: str
    depends_on: tuple[str, ...] = ()
    subscribes_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for ref in (self.contract, *self.depends_on, *self.subscribes_to):
            split_reference(ref)

    @classmethod
    def of(cls, module: Module) -> ModuleSpec:
        return cls(
            name=module.name,
            contract=reference(module.contract),
            depends_on=tuple(reference(c) for c in module.depends_on),
            subscribes_to=tuple(reference(e) for e in module.subscriptions),
        )

    @property
    def contract_name(self) -> str:
        return split_reference(self.contract)[1]


def specs_of(modules: Sequence[Module]) -> list[ModuleSpec]:
    """The specs of the modules a product is made of (the CLI passes `bootstrap.MODULES`)."""
    return [ModuleSpec.of(m) for m in modules]
