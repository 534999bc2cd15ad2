"""Helpers for the headless-Chromium render tests."""

# Marks each <img> once the page has loaded: data-ok="1" when it decoded to a non-empty bitmap.
MARK_IMAGES = """<script>window.addEventListener("load", () => { for (const img of document.images) {
  img.setAttribute("data-ok", img.complete && img.naturalWidth > 0 && img.naturalHeight > 0 ? "1" : "0"); }
  document.body.setAttribute("data-checked", String(document.images.length)); });</script>"""
