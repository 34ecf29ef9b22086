"""Hand-made annotations in the app: the answer in focus gets a rating, labels and a note; the
prompt gets a preferred pane (or tie, or all bad). Everything is saved at once in the session
through one ``engine.annotations.Annotations`` per app (one annotator), and shown as a badge in
each pane's title.

Keys (``ANNOTATION_BINDINGS``; the app adds them to its own):

* with an answer pane focused (alt+1..3, tab or a click; never while a text box has focus, where
  keys type): ``1``..``5`` rate the answer shown, ``0`` removes the rating, ``l`` opens the label
  picker, ``n`` the note editor, ``p`` the prompt's preference;
* ``ctrl+z`` undoes the newest annotation change (not in the hint box, where it undoes typing,
  nor in the prompt box).

The modal screens here (``LabelPicker``, ``NoteEditor``, ``PreferencePicker``) know nothing of
the session: they get the current values and callbacks, so they can be tested alone.

``AnnotationActions`` is a mixin for the app: its ``action_*`` methods and ``badge_for`` use
the host's ``session``, ``prompt_id``, ``panes``, ``active_pane``, ``set_status`` and
``show_error``. The host calls ``setup_annotations(annotator)`` once, ``refresh_annotations()``
whenever the current prompt changes or answers arrive, and ``annotation_allowed(action)`` from
its ``check_action``.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Iterable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, SelectionList, Static, TextArea
from textual.widgets.option_list import Option

from engine.annotations import ALL_BAD, TIE, AnnotationError, Annotations, conditions_of
from engine.sanitize import printable
from engine.session import SessionError

RATING_ACTIONS = ("rate", "pick_labels", "edit_note", "pick_preference")
ANNOTATION_BINDINGS = [
    Binding("1", "rate(1)", "Rate", key_display="1-5"),
    Binding("2", "rate(2)", "Rate 2", show=False),
    Binding("3", "rate(3)", "Rate 3", show=False),
    Binding("4", "rate(4)", "Rate 4", show=False),
    Binding("5", "rate(5)", "Rate 5", show=False),
    Binding("0", "rate(0)", "Remove rating", show=False),
    Binding("l", "pick_labels", "Labels"),
    Binding("n", "edit_note", "Note"),
    Binding("p", "pick_preference", "Best pane"),
    Binding("ctrl+z", "undo_annotation", "Undo", key_display="^z"),
]
USER_ERRORS = (AnnotationError, SessionError, sqlite3.Error, LookupError)
PREFERENCE_TEXT = {TIE: "tie — equally good", ALL_BAD: "all bad — none is acceptable"}
REMOVE = "__remove__"  # PreferencePicker's answer for "remove my preference"


def badge(state: dict | None, preference: str | None = None, condition: str | None = None) -> Text:
    """The badge of one answer: ``★4 · helpful, refusal · ✎`` (rating, labels, note) and the
    prompt's preference as it concerns this pane (``♥ best``, ``= tie``, ``✗ all bad``);
    empty Text when there is nothing to show."""
    parts: list[tuple[str, str]] = []
    state = state or {}
    if state.get("rating"):
        parts.append((f"★{state['rating']}", "bold yellow"))
    if state.get("labels"):
        parts.append((", ".join(printable(label) for label in state["labels"]), "magenta"))
    if state.get("note"):
        parts.append(("✎", "cyan"))
    if preference is not None:
        if preference == TIE:
            parts.append(("= tie", "dim"))
        elif preference == ALL_BAD:
            parts.append(("✗ all bad", "red"))
        elif preference == condition:
            parts.append(("♥ best", "bold green"))
    out = Text()
    for i, (text, style) in enumerate(parts):
        if i:
            out.append(" · ", style="dim")
        out.append(text, style=style)
    return out


class ModalDialog(ModalScreen):
    """A modal box in the middle of the screen with a title, content and a status line."""

    DEFAULT_CSS = """
    ModalDialog {
        align: center middle;
    }
    .dialog {
        width: 80%;
        max-width: 100;
        height: auto;
        max-height: 90%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    .dialog-help {
        color: $text-muted;
        width: 1fr;
        height: auto;
    }
    .dialog-status {
        height: auto;
        min-height: 1;
    }
    .dialog-buttons {
        height: auto;
        align: right middle;
    }
    .dialog-buttons Button {
        margin-left: 1;
    }
    """

    def set_dialog_status(self, text: str, style: str = "") -> None:
        self.status_text = printable(text)
        self.query_one(".dialog-status", Static).update(Text(self.status_text, style=style))


class LabelPicker(ModalDialog):
    """Toggle the labels of one answer. Each toggle is saved at once (``on_toggle`` returns the
    saved change's description, or raises a ValueError with a message); escape or Done closes."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        *[Binding(str(i), f"toggle_number({i})", f"Label {i}", show=False) for i in range(1, 10)],
    ]

    def __init__(self, labels: Iterable[str], selected: Iterable[str], title: str,
                 on_toggle: Callable[[str], str | None], reload: Callable[[], list[str]]) -> None:
        super().__init__()
        self.labels = list(labels)
        self.selected = set(selected)
        self.title_text = title
        self.on_toggle = on_toggle
        self.reload = reload
        self.status_text = ""
        self.saved: list[str] = []  # descriptions of the changes saved here

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="label-dialog") as box:
            box.border_title = Text(printable(self.title_text))
            yield Label(Text("space/enter or 1–9 toggles a label; each change is saved at once. "
                             "Escape closes.", style="dim"), classes="dialog-help")
            # labels beyond those offered (e.g. from an older label set) stay visible and removable
            extra = [label for label in sorted(self.selected) if label not in self.labels]
            yield SelectionList[str](
                *[(self._prompt(i, label, label in self.selected), label, label in self.selected)
                  for i, label in enumerate(self.labels + extra)],
                id="labels",
            )
            yield Static(classes="dialog-status")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Done", id="done", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#labels", SelectionList).focus()

    @staticmethod
    def _prompt(i: int, label: str, on: bool) -> Text:
        """'1 ✓ helpful': the number key, a mark readable without colours, the label."""
        text = Text(f"{i + 1 if i < 9 else ' '} ")
        text.append("✓ " if on else "  ", style="bold green")
        text.append(printable(label))
        return text

    @property
    def choices(self) -> list[str]:
        return self.labels + [label for label in sorted(self.selected) if label not in self.labels]

    @on(SelectionList.SelectionToggled, "#labels")
    def _toggled(self, event: SelectionList.SelectionToggled) -> None:
        event.stop()
        self.toggle(event.selection.value)

    def action_toggle_number(self, number: int) -> None:
        choices = self.choices
        if 1 <= number <= len(choices):
            self.query_one("#labels", SelectionList).highlighted = number - 1
            self.toggle(choices[number - 1])

    def toggle(self, label: str) -> None:
        try:
            description = self.on_toggle(label)
        except USER_ERRORS as exc:
            self.set_dialog_status(f"not saved: {exc}", "bold red")
        else:
            if description:
                self.saved.append(description)
                self.set_dialog_status(f"saved: {description}", "green")
        self._sync()

    def _sync(self) -> None:
        """Show the labels as stored (after a failed toggle too)."""
        try:
            self.selected = set(self.reload())
        except USER_ERRORS as exc:
            self.set_dialog_status(f"cannot read the labels: {exc}", "bold red")
            return
        sl = self.query_one("#labels", SelectionList)
        with sl.prevent(SelectionList.SelectedChanged):
            for i, label in enumerate(self.choices):
                if label in self.selected:
                    sl.select(label)
                else:
                    sl.deselect(label)
                sl.replace_option_prompt_at_index(i, self._prompt(i, label, label in self.selected))

    @on(Button.Pressed, "#done")
    def action_close(self) -> None:
        self.dismiss(self.saved)


class NoteEditor(ModalDialog):
    """Edit the free-text note of one answer. Nothing is saved until Save (ctrl+s); escape or
    Cancel discards the draft. The state line says whether the text differs from the saved note."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save note", priority=True),
        Binding("escape", "cancel", "Cancel (discard draft)"),
    ]

    DEFAULT_CSS = """
    #note-text {
        height: 10;
    }
    """

    def __init__(self, note: str | None, title: str) -> None:
        super().__init__()
        self.saved_note = note or ""
        self.title_text = title
        self.status_text = ""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="note-dialog") as box:
            box.border_title = Text(printable(self.title_text))
            yield Label(Text("Type the note. ctrl+s or Save stores it; escape or Cancel closes without "
                             "saving. An empty note removes the saved one.", style="dim"), classes="dialog-help")
            yield TextArea(printable(self.saved_note), id="note-text", soft_wrap=True, show_line_numbers=False)
            yield Static(classes="dialog-status")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save (ctrl+s)", id="save", variant="primary")

    def on_mount(self) -> None:
        area = self.query_one("#note-text", TextArea)
        area.focus()
        area.move_cursor(area.document.end)
        self._show_state()

    @property
    def draft(self) -> str:
        return self.query_one("#note-text", TextArea).text

    @property
    def dirty(self) -> bool:
        return self.draft.strip() != self.saved_note.strip()

    @on(TextArea.Changed, "#note-text")
    def _changed(self, event: TextArea.Changed) -> None:
        self._show_state()

    def _show_state(self) -> None:
        box = self.query_one("#note-dialog")
        if self.dirty:
            self.set_dialog_status("● draft — not saved (ctrl+s saves, escape discards)", "bold yellow")
            box.border_subtitle = "draft"
        elif self.saved_note.strip():
            self.set_dialog_status("✓ saved — the note as stored", "green")
            box.border_subtitle = "saved"
        else:
            self.set_dialog_status("no note yet", "dim")
            box.border_subtitle = ""

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        self.dismiss(self.draft)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class PreferencePicker(ModalDialog):
    """Choose the best pane of the prompt (a condition), tie or all bad; or remove the choice.
    Dismisses with the choice, ``REMOVE``, or None (escape)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, conditions: Iterable[str], current: str | None, title: str,
                 describe: Callable[[str], str] = lambda c: c) -> None:
        super().__init__()
        self.conditions = list(conditions)
        self.current = current
        self.title_text = title
        self.describe = describe
        self.status_text = ""

    def compose(self) -> ComposeResult:
        options = []
        for cond in self.conditions:
            mark = "● " if cond == self.current else "  "
            options.append(Option(Text(f"{mark}{printable(cond)} — {printable(self.describe(cond))}"), id=cond))
        for special in (TIE, ALL_BAD):
            mark = "● " if special == self.current else "  "
            options.append(Option(Text(f"{mark}{PREFERENCE_TEXT[special]}"), id=special))
        if self.current is not None:
            options.append(Option(Text("  remove my preference", style="dim"), id=REMOVE))
        with Vertical(classes="dialog", id="preference-dialog") as box:
            box.border_title = Text(printable(self.title_text))
            yield Label(Text("Which answer is best for this prompt? enter chooses (saved at once); "
                             "escape cancels.", style="dim"), classes="dialog-help")
            yield OptionList(*options, id="preferences")
            yield Static(classes="dialog-status")

    def on_mount(self) -> None:
        ol = self.query_one("#preferences", OptionList)
        ol.focus()
        if self.current is not None:
            try:
                ol.highlighted = ol.get_option_index(self.current)
            except Exception:  # noqa: BLE001 - a stored choice no longer offered
                pass

    @on(OptionList.OptionSelected, "#preferences")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AnnotationActions:
    """Annotation actions and badges for the app (a mixin; see the module docstring)."""

    annotations: Annotations | None = None
    _annotation_error: str | None = None
    _badge_states: dict[str, dict]
    _badge_preference: str | None = None
    _badge_prompt: str | None = None

    def setup_annotations(self, annotator: str | None, labels: Iterable[str] | None = None) -> None:
        """One ``Annotations`` for the current session (again after switching sessions)."""
        self._badge_states = {}
        self._badge_preference = None
        self._badge_prompt = None
        try:
            self.annotations = Annotations(self.session, annotator=annotator, labels=labels)
            self._annotation_error = None
        except USER_ERRORS as exc:  # e.g. an annotator name with control characters
            self.annotations = None
            self._annotation_error = str(exc)

    # -- which answer ---------------------------------------------------------------------
    def annotation_allowed(self, action: str) -> bool | None:
        """For the host's ``check_action``: rating keys only while an answer pane has focus
        (so that digits and letters type in text boxes); undo not while a text box has focus."""
        from tui.panes import AnswerPane

        focused = self.focused
        if action in RATING_ACTIONS:
            return isinstance(focused, AnswerPane)
        if action == "undo_annotation":
            return not isinstance(focused, (Input, TextArea))
        return True

    def annotation_target(self):
        """(pane, generation id) of the answer in focus; raises AnnotationError saying why not."""
        from tui.panes import AnswerPane

        if self.annotations is None:
            raise AnnotationError(f"annotations are off: {self._annotation_error}")
        pane = self.focused if isinstance(self.focused, AnswerPane) else self.active_pane
        if self.prompt_id is None:
            raise AnnotationError("no prompt yet: type one and press enter, or open one with ctrl+s")
        index = pane.current
        if index is None:
            raise AnnotationError(f"pane {pane.slot + 1} ({pane.condition}) has no answer to annotate")
        sample = pane.samples[index]
        if sample.finish_reason is None:
            raise AnnotationError(f"pane {pane.slot + 1} ({pane.condition}): sample {index + 1} is still "
                                  "being generated; annotate it when it is done")
        gid = self._generation_id(pane.condition, index, sample)
        if gid is None:
            raise AnnotationError(f"pane {pane.slot + 1} ({pane.condition}) sample {index + 1} is not "
                                  "stored in the session, so it cannot be annotated")
        return pane, gid

    def _generation_id(self, condition: str, index: int, sample=None) -> str | None:
        gid = getattr(sample, "generation_id", None)
        if gid:
            return gid
        if self.prompt_id is None:
            return None
        batch = self.session.latest_batches(self.prompt_id, include_cancelled=True).get(
            (self.prompt_id, condition), {})
        row = batch.get(index)
        return row["id"] if row else None

    def _target_title(self, pane) -> str:
        return f"pane {pane.slot + 1}: {pane.condition}, sample {pane.current + 1}"

    def _saved(self, description: str | None, what: str = "") -> None:
        if description:
            self.set_status(f"saved: {description}", "green")
        else:
            self.set_status(f"unchanged{': ' + what if what else ''} (already so)", "dim")
        self.refresh_annotations()

    def _annotation_failed(self, exc: Exception) -> None:
        if isinstance(exc, AnnotationError):
            self.set_status(str(exc), "yellow")
        else:
            self.show_error(str(exc), type(exc).__name__)

    # -- actions --------------------------------------------------------------------------
    def action_rate(self, rating: int) -> None:
        try:
            pane, gid = self.annotation_target()
            description = self.annotations.set_rating(gid, rating or None)
        except USER_ERRORS as exc:
            self._annotation_failed(exc)
            return
        self._saved(description, "rating")

    def action_pick_labels(self) -> None:
        try:
            pane, gid = self.annotation_target()
            current = self.annotations.current(gid)["labels"]
        except USER_ERRORS as exc:
            self._annotation_failed(exc)
            return
        annotations = self.annotations

        def done(saved: list[str] | None) -> None:
            if saved:
                self.set_status(f"saved: {'; '.join(saved)}", "green")
            self.refresh_annotations()

        self.push_screen(
            LabelPicker(annotations.labels, current, f"Labels — {self._target_title(pane)}",
                        on_toggle=lambda label: annotations.toggle_label(gid, label),
                        reload=lambda: annotations.current(gid)["labels"]),
            done,
        )

    def action_edit_note(self) -> None:
        try:
            pane, gid = self.annotation_target()
            note = self.annotations.current(gid)["note"]
        except USER_ERRORS as exc:
            self._annotation_failed(exc)
            return
        annotations = self.annotations

        def done(text: str | None) -> None:
            if text is None:
                self.set_status("note not saved (cancelled)", "yellow")
                return
            try:
                description = annotations.set_note(gid, text)
            except USER_ERRORS as exc:
                self._annotation_failed(exc)
                return
            self._saved(description, "note")

        self.push_screen(NoteEditor(note, f"Note — {self._target_title(pane)}"), done)

    def action_pick_preference(self) -> None:
        from tui.panes import condition_label

        if self.annotations is None or self.prompt_id is None:
            self._annotation_failed(AnnotationError(
                f"annotations are off: {self._annotation_error}" if self.annotations is None
                else "no prompt yet: type one and press enter, or open one with ctrl+s"))
            return
        prompt_id = self.prompt_id
        try:
            have = conditions_of(self.session, prompt_id)
            current = self.annotations.preference(prompt_id)
        except USER_ERRORS as exc:
            self._annotation_failed(exc)
            return
        if not have:
            self.set_status("no answers for this prompt yet: generate some before choosing the best", "yellow")
            return
        shown = [c for c in self.pane_conditions if c in have]
        order = shown + [c for c in have if c not in shown]
        annotations = self.annotations

        def done(choice: str | None) -> None:
            if choice is None:
                return
            try:
                description = annotations.set_preference(prompt_id, None if choice == REMOVE else choice)
            except USER_ERRORS as exc:
                self._annotation_failed(exc)
                return
            self._saved(description, "preference")

        self.push_screen(PreferencePicker(order, current, "Best answer for this prompt",
                                          describe=condition_label), done)

    def action_undo_annotation(self) -> None:
        if self.annotations is None:
            self.set_status(f"annotations are off: {self._annotation_error}", "yellow")
            return
        try:
            description = self.annotations.undo()
        except USER_ERRORS as exc:
            self._annotation_failed(exc)
            self.refresh_annotations()
            return
        if description is None:
            self.set_status("nothing to undo (annotation changes made in this app run can be undone)", "dim")
            return
        self.set_status(f"undone: {description}", "green")
        self.refresh_annotations()

    # -- badges ---------------------------------------------------------------------------
    def refresh_annotations(self) -> None:
        """Re-read this annotator's annotations of the current prompt and redraw the badges."""
        self._badge_states = {}
        self._badge_preference = None
        self._badge_prompt = self.prompt_id
        if self.annotations is not None and self.prompt_id is not None:
            try:
                self._badge_states = self.annotations.for_prompt(self.prompt_id)
                self._badge_preference = self.annotations.preference(self.prompt_id)
            except USER_ERRORS as exc:
                self.show_error(f"cannot read the annotations: {exc}", type(exc).__name__)
        for pane in self.panes:
            pane.redraw()

    def badge_for(self, condition: str, index: int | None, sample=None) -> Text:
        """The badge of the answer a pane shows (from the cache ``refresh_annotations`` fills)."""
        if self.annotations is None or self.prompt_id is None or sample is None:
            return Text()
        if self._badge_prompt != self.prompt_id:
            self._badge_prompt = self.prompt_id  # refreshed lazily after a prompt switch
            try:
                self._badge_states = self.annotations.for_prompt(self.prompt_id)
                self._badge_preference = self.annotations.preference(self.prompt_id)
            except USER_ERRORS:
                self._badge_states, self._badge_preference = {}, None
        gid = getattr(sample, "generation_id", None)
        if gid is None and index is not None and sample is not None and sample.finish_reason is not None:
            try:
                gid = self._generation_id(condition, index, sample)
            except USER_ERRORS:
                gid = None
        return badge(self._badge_states.get(gid) if gid else None, self._badge_preference, condition)
