// fbmarket web page: small progressive enhancements; the page works without them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("search-form");
  if (!form) return;
  const photo = document.getElementById("photo");
  const preview = document.getElementById("photo-preview");
  const previewImg = document.getElementById("photo-preview-img");
  const previewName = document.getElementById("photo-preview-name");
  const clear = document.getElementById("photo-clear");

  // Show the chosen photo before searching with it.
  photo.addEventListener("change", () => {
    const file = photo.files && photo.files[0];
    if (!file) return;
    previewImg.src = URL.createObjectURL(file);
    previewName.textContent = file.name;
    preview.hidden = false;
  });

  clear.addEventListener("click", () => {
    photo.value = "";
    preview.hidden = true;
    previewImg.removeAttribute("src");
  });

  // Searches without a photo go by GET, so their address can be bookmarked and shared.
  form.addEventListener("submit", (event) => {
    if (photo.files && photo.files.length) return; // multipart POST with the photo
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (typeof value === "string" && value.trim() !== "") params.append(name, value.trim());
    }
    window.location.assign("/?" + params.toString());
  });

  // Picking a known buyer clears the inline description, and the other way round.
  const buyer = document.getElementById("user_id");
  const inline = ["age", "gender", "location"].map((id) => document.getElementById(id));
  buyer.addEventListener("change", () => {
    if (buyer.value) inline.forEach((el) => { el.value = ""; });
  });
  inline.forEach((el) => el.addEventListener("change", () => {
    if (el.value && buyer.tagName === "SELECT") buyer.value = "";
  }));
});
