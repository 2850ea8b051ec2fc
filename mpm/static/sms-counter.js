// Live SMS counter: characters, GSM-7 or UCS-2, segments, as a manager types.
// Same rules as mpm/messaging/encoding.py (the server's count is the one that decides):
// GSM-7: 160 septets in one SMS, 153 per part; extension characters take two septets and are
// never split. One character outside GSM-7 makes the whole message UCS-2: 70 UTF-16 units in
// one SMS, 67 per part; a surrogate pair (emoji) is never split.
// Usage: <textarea data-sms-counter="counter-id"> and an element #counter-id holding
// [data-count=characters|encoding|segments|remaining|hint] spans.
(function (root) {
  "use strict";

  // GSM 03.38 basic set (one septet each) and extension table (escape + one septet).
  var GSM_BASIC = "\n\r\u001b !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ_" +
    "abcdefghijklmnopqrstuvwxyz\u00a1\u00a3\u00a4\u00a5\u00a7\u00bf\u00c4\u00c5\u00c6\u00c7\u00c9\u00d1" +
    "\u00d6\u00d8\u00dc\u00df\u00e0\u00e4\u00e5\u00e6\u00e8\u00e9\u00ec\u00f1\u00f2\u00f6\u00f8\u00f9\u00fc" +
    "\u0393\u0394\u0398\u039b\u039e\u03a0\u03a3\u03a6\u03a8\u03a9";
  var GSM_EXTENSION = "\f[\\]^{|}~\u20ac";

  function septets(ch) {
    if (GSM_BASIC.indexOf(ch) !== -1) return 1;
    if (GSM_EXTENSION.indexOf(ch) !== -1) return 2;
    return null;
  }

  function pack(sizes, single, multi) {
    var total = 0;
    sizes.forEach(function (s) { total += s; });
    if (total === 0) return [0, single, total];
    if (total <= single) return [1, single, total];
    var segments = 1, used = 0;
    sizes.forEach(function (s) {
      if (used + s > multi) { segments += 1; used = 0; }
      used += s;
    });
    return [segments, multi, total];
  }

  function analyse(body) {
    var chars = Array.from(body || "");  // code points, as Python's len()
    var gsm = chars.map(septets);
    var result;
    if (gsm.every(function (s) { return s !== null; })) {
      result = pack(gsm, 160, 153);
      return { characters: chars.length, encoding: "GSM-7", segments: result[0], perSegment: result[1], units: result[2] };
    }
    var units = chars.map(function (c) { return c.codePointAt(0) > 0xffff ? 2 : 1; });
    result = pack(units, 70, 67);
    return { characters: chars.length, encoding: "UCS-2", segments: result[0], perSegment: result[1], units: result[2] };
  }

  var UCS2_HINT = "A character outside GSM-7 (an emoji, a curly quote\u2026) makes the whole message UCS-2: " +
    "70 characters per SMS instead of 160.";

  function render(counter, info) {
    function set(name, text) {
      var el = counter.querySelector('[data-count="' + name + '"]');
      if (el) el.textContent = text;
      return el;
    }
    set("characters", String(info.characters));
    set("encoding", info.encoding);
    set("segments", String(info.segments));
    var left = info.segments ? info.segments * info.perSegment - info.units : info.perSegment;
    set("remaining", "(" + left + " left in this segment)");
    var hint = set("hint", info.encoding === "UCS-2" ? UCS2_HINT : "");
    if (hint) hint.className = info.encoding === "UCS-2" ? "warning" : "";
    var max = parseInt(counter.getAttribute("data-max-segments"), 10);
    counter.classList.toggle("too-long", !isNaN(max) && info.segments > max);
  }

  root.MpmSmsCounter = { analyse: analyse };
  if (typeof module !== "undefined" && module.exports) module.exports = { analyse: analyse };

  // The script may be loaded again by an htmx swap: listen once, on the document.
  if (typeof document === "undefined" || root.__mpmSmsCounterListening) return;
  root.__mpmSmsCounterListening = true;
  document.addEventListener("input", function (event) {
    var field = event.target;
    if (!field.matches || !field.matches("textarea[data-sms-counter]")) return;
    var counter = document.getElementById(field.getAttribute("data-sms-counter"));
    if (counter) render(counter, analyse(field.value));
  });
})(typeof window !== "undefined" ? window : globalThis);
