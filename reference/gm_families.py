"""General MIDI programs -> NSynth instrument families, sources and usable pitch ranges.

Used by :mod:`reference.render` to turn SoundFont presets into NSynth-style instruments.
The mapping follows the GM program groups, with the exceptions noted below:

=========  ===============================================  ==============================
programs   GM group                                         family
=========  ===============================================  ==============================
0-7        pianos, electric pianos, harpsichord, clavinet   keyboard
8-15       chromatic percussion (celesta ... dulcimer)      mallet
16-21, 23  organs, accordion, tango accordion               organ  (free-reed keyboards
                                                                    sound like reed organs)
22         harmonica                                        reed
24-31      guitars                                          guitar
32-39      basses (acoustic, electric, synth)               bass
40-46      violin, viola, cello, contrabass, tremolo,       string
           pizzicato, harp
48-51      string ensembles, synth strings                  string
52-54      choir aahs, voice oohs, synth voice              vocal
56-63      brass, synth brass                               brass
64-71      saxophones, oboe, English horn, bassoon,         reed
           clarinet
72-79      pipes (piccolo ... ocarina)                      flute
80-87      synth leads                                      synth_lead
104-107    sitar, banjo, shamisen, koto (plucked)           guitar
108        kalimba                                          mallet
109, 111   bagpipe, shanai                                  reed
110        fiddle                                           string
112, 114   tinkle bell, steel drums                         mallet
=========  ===============================================  ==============================

Left out (no NSynth family fits): 47 timpani, 55 orchestra hit, 88-95 synth pads,
96-103 synth effects, 113 agogo, 115-119 drums and cymbals, 120-127 sound effects, and
every percussion bank (128).  Bank variants (e.g. bank 8 "Detuned Organ 1", MuseScore's
bank 20 "Violins Tremolo") inherit their program's family, unless their name says they are a
pad, an effect, a drum or a controller-driven "Expr." preset (``EXCLUDED_NAME_WORDS``).

``instrument_source`` follows NSynth: acoustic (recorded acoustic instruments), electronic
(electric/electro-mechanical: electric pianos and guitars, drawbar organs, electric basses),
synthetic (synth basses, strings, voice, brass and leads).  The pitch range of each program
is its real instrument's usual range, clipped to NSynth's 21-108.

Example
-------
>>> program_info(56)
ProgramInfo(program=56, name='Trumpet', family='brass', source='acoustic', low=52, high=84, distortion=False)
>>> program_info(47) is None
True
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgramInfo:
    program: int
    name: str
    family: str
    source: str
    low: int  # lowest MIDI pitch rendered
    high: int  # highest MIDI pitch rendered
    distortion: bool = False  # NSynth quality "distortion" set for every note


A, E, S = "acoustic", "electronic", "synthetic"
# program: (name, family, source, low, high[, distortion])
_TABLE: dict[int, tuple] = {
    0: ("Acoustic Grand Piano", "keyboard", A, 21, 108), 1: ("Bright Acoustic Piano", "keyboard", A, 21, 108),
    2: ("Electric Grand Piano", "keyboard", E, 21, 108), 3: ("Honky-tonk Piano", "keyboard", A, 21, 108),
    4: ("Electric Piano 1", "keyboard", E, 28, 103), 5: ("Electric Piano 2", "keyboard", E, 28, 103),
    6: ("Harpsichord", "keyboard", A, 29, 89), 7: ("Clavinet", "keyboard", E, 29, 89),
    8: ("Celesta", "mallet", A, 60, 108), 9: ("Glockenspiel", "mallet", A, 72, 108),
    10: ("Music Box", "mallet", A, 60, 108), 11: ("Vibraphone", "mallet", A, 53, 89),
    12: ("Marimba", "mallet", A, 45, 96), 13: ("Xylophone", "mallet", A, 65, 108),
    14: ("Tubular Bells", "mallet", A, 60, 77), 15: ("Dulcimer", "mallet", A, 48, 96),
    16: ("Drawbar Organ", "organ", E, 36, 96), 17: ("Percussive Organ", "organ", E, 36, 96),
    18: ("Rock Organ", "organ", E, 36, 96), 19: ("Church Organ", "organ", A, 24, 96),
    20: ("Reed Organ", "organ", A, 36, 96), 21: ("Accordion", "organ", A, 41, 89),
    22: ("Harmonica", "reed", A, 60, 84), 23: ("Tango Accordion", "organ", A, 41, 89),
    24: ("Acoustic Guitar (nylon)", "guitar", A, 40, 84), 25: ("Acoustic Guitar (steel)", "guitar", A, 40, 84),
    26: ("Electric Guitar (jazz)", "guitar", E, 40, 86), 27: ("Electric Guitar (clean)", "guitar", E, 40, 86),
    28: ("Electric Guitar (muted)", "guitar", E, 40, 86), 29: ("Overdriven Guitar", "guitar", E, 40, 86, True),
    30: ("Distortion Guitar", "guitar", E, 40, 86, True), 31: ("Guitar Harmonics", "guitar", E, 52, 96),
    32: ("Acoustic Bass", "bass", A, 28, 67), 33: ("Electric Bass (finger)", "bass", E, 28, 67),
    34: ("Electric Bass (pick)", "bass", E, 28, 67), 35: ("Fretless Bass", "bass", E, 28, 67),
    36: ("Slap Bass 1", "bass", E, 28, 67), 37: ("Slap Bass 2", "bass", E, 28, 67),
    38: ("Synth Bass 1", "bass", S, 24, 72), 39: ("Synth Bass 2", "bass", S, 24, 72),
    40: ("Violin", "string", A, 55, 100), 41: ("Viola", "string", A, 48, 91),
    42: ("Cello", "string", A, 36, 76), 43: ("Contrabass", "string", A, 28, 60),
    44: ("Tremolo Strings", "string", A, 28, 96), 45: ("Pizzicato Strings", "string", A, 28, 96),
    46: ("Orchestral Harp", "string", A, 24, 103),
    48: ("String Ensemble 1", "string", A, 28, 96), 49: ("String Ensemble 2", "string", A, 28, 96),
    50: ("Synth Strings 1", "string", S, 36, 96), 51: ("Synth Strings 2", "string", S, 36, 96),
    52: ("Choir Aahs", "vocal", A, 45, 81), 53: ("Voice Oohs", "vocal", A, 45, 81),
    54: ("Synth Voice", "vocal", S, 45, 84),
    56: ("Trumpet", "brass", A, 52, 84), 57: ("Trombone", "brass", A, 40, 72),
    58: ("Tuba", "brass", A, 28, 58), 59: ("Muted Trumpet", "brass", A, 52, 82),
    60: ("French Horn", "brass", A, 34, 77), 61: ("Brass Section", "brass", A, 36, 84),
    62: ("Synth Brass 1", "brass", S, 36, 84), 63: ("Synth Brass 2", "brass", S, 36, 84),
    64: ("Soprano Sax", "reed", A, 56, 87), 65: ("Alto Sax", "reed", A, 49, 80),
    66: ("Tenor Sax", "reed", A, 44, 75), 67: ("Baritone Sax", "reed", A, 36, 69),
    68: ("Oboe", "reed", A, 58, 91), 69: ("English Horn", "reed", A, 52, 81),
    70: ("Bassoon", "reed", A, 34, 72), 71: ("Clarinet", "reed", A, 50, 91),
    72: ("Piccolo", "flute", A, 74, 108), 73: ("Flute", "flute", A, 60, 96),
    74: ("Recorder", "flute", A, 60, 96), 75: ("Pan Flute", "flute", A, 60, 96),
    76: ("Blown Bottle", "flute", A, 60, 96), 77: ("Shakuhachi", "flute", A, 55, 91),
    78: ("Whistle", "flute", A, 60, 96), 79: ("Ocarina", "flute", A, 60, 96),
    80: ("Lead 1 (square)", "synth_lead", S, 36, 96), 81: ("Lead 2 (sawtooth)", "synth_lead", S, 36, 96),
    82: ("Lead 3 (calliope)", "synth_lead", S, 36, 96), 83: ("Lead 4 (chiff)", "synth_lead", S, 36, 96),
    84: ("Lead 5 (charang)", "synth_lead", S, 36, 96, True), 85: ("Lead 6 (voice)", "synth_lead", S, 36, 96),
    86: ("Lead 7 (fifths)", "synth_lead", S, 36, 96), 87: ("Lead 8 (bass + lead)", "synth_lead", S, 28, 96),
    104: ("Sitar", "guitar", A, 48, 84), 105: ("Banjo", "guitar", A, 48, 84),
    106: ("Shamisen", "guitar", A, 50, 84), 107: ("Koto", "guitar", A, 55, 91),
    108: ("Kalimba", "mallet", A, 60, 91), 109: ("Bagpipe", "reed", A, 55, 81),
    110: ("Fiddle", "string", A, 55, 100), 111: ("Shanai", "reed", A, 60, 91),
    112: ("Tinkle Bell", "mallet", A, 72, 108), 114: ("Steel Drums", "mallet", A, 52, 76),
}
PERCUSSION_BANK = 128
# A bank variant whose preset name contains one of these is not a pitched instrument of its program's family.
# "Expr." presets (MuseScore banks 17+) take their loudness from a breath/mod controller and are
# silent at note-on; they would also duplicate their program's samples.
EXCLUDED_NAME_WORDS = ("pad", "fx", "drum", "noise", "metronome", "click", "sfx", "tom", "cymbal", "expr")


def program_info(program: int) -> ProgramInfo | None:
    """The family, source and pitch range of a GM program (0-127), or None if it fits no family."""
    row = _TABLE.get(program)
    if row is None:
        return None
    name, family, source, low, high, *rest = row
    return ProgramInfo(program, name, family, source, low, high, bool(rest and rest[0]))


def preset_info(bank: int, program: int, preset_name: str) -> ProgramInfo | None:
    """Like :func:`program_info` for a SoundFont preset (bank, program, name); None = leave it out."""
    if bank == PERCUSSION_BANK:
        return None
    info = program_info(program)
    words = set(re.split(r"[^a-z0-9]+", preset_name.lower()))
    if info is None or (bank != 0 and words & set(EXCLUDED_NAME_WORDS)):
        return None
    return info
