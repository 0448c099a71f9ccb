"""A keyboard-operable slider (Textual has none built in): left/right step, shift for big steps, value shown."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class Slider(Widget, can_focus=True):
    """label  value  ━━━━━●─────  (click or arrow keys)"""

    BINDINGS = [
        Binding("left", "step(-1)", "Less", show=False),
        Binding("right", "step(1)", "More", show=False),
        Binding("shift+left", "step(-10)", show=False),
        Binding("shift+right", "step(10)", show=False),
        Binding("home", "jump(0)", show=False),
        Binding("end", "jump(1)", show=False),
    ]
    DEFAULT_CSS = """
    Slider { height: 1; width: 1fr; }
    Slider:focus { background: $boost; text-style: bold; }
    """

    value: reactive[float] = reactive(0.0)

    @dataclass
    class Changed(Message):
        slider: Slider
        value: float

        @property
        def control(self) -> Slider:
            return self.slider

    def __init__(self, label: str, minimum: float, maximum: float, step: float, value: float,
                 integer: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label, self.minimum, self.maximum, self.step_size, self.integer = label, minimum, maximum, step, integer
        self.set_reactive(Slider.value, self.validate_value(value))

    def validate_value(self, value: float) -> float:
        value = min(self.maximum, max(self.minimum, value))
        return float(round(value)) if self.integer else round(value, 4)

    def watch_value(self, value: float) -> None:
        self.post_message(self.Changed(self, value))

    def action_step(self, n: int) -> None:
        self.value = self.value + n * self.step_size

    def action_jump(self, end: int) -> None:
        self.value = self.maximum if end else self.minimum

    def _prefix(self) -> str:
        """The label and value before the bar (a label longer than 18 characters widens it)."""
        return f"{self.label:<18}{self.display_value:>6}  "

    def on_click(self, event) -> None:
        bar_start = len(self._prefix())
        width = max(2, self.size.width - bar_start)
        if event.x >= bar_start:  # the knob's cell for a value, inverted: the bar's last cell is the maximum
            self.value = self.minimum + (event.x - bar_start) / (width - 1) * (self.maximum - self.minimum)

    @property
    def display_value(self) -> str:
        return f"{int(self.value)}" if self.integer else f"{self.value:.2f}"

    def render(self) -> Text:
        prefix = self._prefix()
        width = max(4, self.size.width - len(prefix))
        frac = (self.value - self.minimum) / (self.maximum - self.minimum or 1)
        knob = min(width - 1, int(frac * (width - 1)))
        text = Text(prefix, no_wrap=True, overflow="crop")
        text.append("━" * knob, style="bold")
        text.append("●", style="bold")
        text.append("─" * (width - knob - 1), style="dim")
        return text
