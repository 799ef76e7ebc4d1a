// Keep the main menu open on wide screens; on phones it is a toggle.
(function () {
  var menu = document.getElementById("main-menu");
  if (!menu) return;
  var wide = window.matchMedia("(min-width: 48rem)");
  function sync() { if (wide.matches) menu.open = true; }
  sync();
  wide.addEventListener("change", sync);
})();
