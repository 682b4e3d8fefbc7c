"""Part specs and routing templates: versions of a part revision's routing, from Draft through Approved
(and Frozen, once a job uses one) to Deprecated, and the default template a new job of the part takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.errors import Reason, Refused
from gateway.jobs.changes import Dirty
from gateway.jobs.layout import CellLayout
from gateway.jobs.model import PartSpec, Routing, RoutingTemplate, TemplateStatus


@dataclass(slots=True)
class TemplateRegistry:
    """The part specs and routing templates of the cell; every change is marked in ``dirty``."""

    dirty: Dirty
    specs: dict[tuple[str, str], PartSpec] = field(default_factory=dict)
    templates: dict[str, RoutingTemplate] = field(default_factory=dict)

    def template(self, template_id: str) -> RoutingTemplate:
        try:
            return self.templates[template_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"routing template {template_id!r} does not exist") from None

    def has_usable_template(self, part: str, revision: str) -> bool:
        return any(t.usable for t in self.templates.values() if t.part == part and t.revision == revision)

    def _spec(self, part: str, revision: str) -> PartSpec:
        spec = self.specs.get((part, revision))
        if spec is None:
            spec = self.specs[(part, revision)] = PartSpec(part, revision)
            self.dirty.specs.add(spec.key)
        return spec

    def create_template(
        self, layout: CellLayout, part: str, revision: str, operations: Sequence[str], at: datetime
    ) -> RoutingTemplate:
        require_text(part=part, revision=revision)
        return self.new_template(part, revision, layout.resolve(operations), at)

    def new_template(self, part: str, revision: str, steps: Routing, at: datetime) -> RoutingTemplate:
        """A new Draft version of the part revision's routing."""
        spec = self._spec(part, revision)
        spec.template_versions += 1
        template = RoutingTemplate(
            id=f"{part}/{revision}/v{spec.template_versions}",
            part=part,
            revision=revision,
            version=spec.template_versions,
            steps=steps,
            created_at=at,
        )
        self.templates[template.id] = template
        self.dirty.templates.add(template.id)
        self.dirty.specs.add(spec.key)
        return template

    def edit_template(self, layout: CellLayout, template_id: str, operations: Sequence[str]) -> RoutingTemplate:
        template = self.template(template_id)
        if template.status is TemplateStatus.FROZEN:
            raise Refused(
                Reason.TEMPLATE_FROZEN,
                f"template {template_id} is referenced by a job and frozen; deprecate it and create a new version",
            )
        if template.status is not TemplateStatus.DRAFT:
            raise Refused(
                Reason.INVALID_TRANSITION,
                f"template {template_id} is {template.status.value}; only a Draft can be edited, create a new version",
            )
        template.steps = layout.resolve(operations)
        self.dirty.templates.add(template_id)
        return template

    def approve_template(self, template_id: str) -> RoutingTemplate:
        template = self.template(template_id)
        if template.status is not TemplateStatus.DRAFT:
            raise Refused(
                Reason.INVALID_TRANSITION,
                f"template {template_id} is {template.status.value}; only a Draft can be approved",
            )
        template.status = TemplateStatus.APPROVED
        self.dirty.templates.add(template_id)
        return template

    def set_default_template(self, part: str, revision: str, template_id: str) -> PartSpec:
        template = self.template(template_id)
        if (template.part, template.revision) != (part, revision):
            raise Refused(
                Reason.INVALID_ARGUMENT,
                f"template {template_id} belongs to {template.part} rev {template.revision}, not {part} rev {revision}",
            )
        if not template.usable:
            raise Refused(
                Reason.TEMPLATE_NOT_APPROVED,
                f"template {template_id} is {template.status.value}; only an approved template can be default",
            )
        spec = self._spec(part, revision)
        spec.default_template_id = template_id
        self.dirty.specs.add(spec.key)
        return spec

    def deprecate_template(self, template_id: str) -> RoutingTemplate:
        template = self.template(template_id)
        if template.status is TemplateStatus.DEPRECATED:
            raise Refused(Reason.INVALID_TRANSITION, f"template {template_id} is already deprecated")
        template.status = TemplateStatus.DEPRECATED
        self.dirty.templates.add(template_id)
        spec = self.specs.get((template.part, template.revision))
        if spec is not None and spec.default_template_id == template_id:
            # The part falls back to automatic mode until another template is made default.
            spec.default_template_id = ""
            self.dirty.specs.add(spec.key)
        return template


def require_text(**values: str) -> None:
    for name, value in values.items():
        if not value or not value.strip():
            raise Refused(Reason.INVALID_ARGUMENT, f"{name} must not be empty")
