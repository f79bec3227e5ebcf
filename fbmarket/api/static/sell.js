// fbmarket Sell page: live advice as the seller types, and publishing with the write key
// kept in this tab's sessionStorage (never in the page or a cookie). The page works without it.
"use strict";

const KEY_STORE = "fbmarket.writeKey";
const FIELDS = ["title", "description", "price", "location", "category", "photos", "api_key"];

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("sell-form");
  if (!form) return;
  const advice = document.getElementById("advice");
  const photos = document.getElementById("photos");
  const previews = document.getElementById("photo-previews");
  const keyRow = document.getElementById("key-row");
  const keyInput = document.getElementById("api_key");
  const keyKept = document.getElementById("key-kept");
  let sequence = 0;
  let timer = null;

  function showKeyState() {
    const kept = Boolean(sessionStorage.getItem(KEY_STORE));
    keyRow.hidden = kept;
    keyKept.hidden = !kept;
  }

  function markErrors() {
    // The fragment lists the errors by field; mirror them next to the inputs.
    const errors = {};
    advice.querySelectorAll("[data-field]").forEach((li) => {
      if (li.tagName === "LI") errors[li.dataset.field] = li.textContent;
    });
    for (const name of FIELDS) {
      const input = document.getElementById(name);
      const note = document.getElementById(name + "-error");
      if (!input || !note) continue;
      if (errors[name]) {
        input.setAttribute("aria-invalid", "true");
        note.textContent = errors[name];
        note.hidden = false;
      } else {
        input.removeAttribute("aria-invalid");
        note.textContent = "";
        note.hidden = true;
      }
    }
    if (errors.api_key) {
      sessionStorage.removeItem(KEY_STORE);
      showKeyState();
    }
  }

  function draft() {
    const data = new FormData(form);
    data.delete("api_key");
    data.delete("action");
    if (!photos.files.length) data.delete("photos");
    return data;
  }

  async function swap(url, data, headers) {
    const mine = ++sequence;
    advice.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(url, { method: "POST", body: data, headers: headers || {} });
      const html = await response.text();
      if (mine !== sequence) return null; // a newer request is on its way
      advice.innerHTML = html;
      markErrors();
      return response.status;
    } catch (error) {
      if (mine === sequence) advice.innerHTML = '<p class="error" role="alert">The server did not answer: ' + error + "</p>";
      return null;
    } finally {
      if (mine === sequence) advice.removeAttribute("aria-busy");
    }
  }

  function refresh() {
    clearTimeout(timer);
    timer = null;
    const data = draft();
    const hasText = ["title", "description"].some((n) => String(data.get(n) || "").trim());
    if (!hasText && !photos.files.length) return;
    swap("/sell/advice", data);
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 450);
  }

  ["title", "description", "price", "location", "category"].forEach((name) => {
    document.getElementById(name).addEventListener("input", later);
  });

  photos.addEventListener("change", () => {
    previews.replaceChildren();
    for (const file of photos.files) {
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      img.alt = file.name;
      previews.appendChild(img);
    }
    refresh();
  });

  // A suggested category fills the field.
  advice.addEventListener("click", (event) => {
    const button = event.target.closest("button.suggestion");
    if (!button) return;
    document.getElementById("category").value = button.dataset.category;
    later();
  });

  document.getElementById("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    showKeyState();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter ? event.submitter.value : "check";
    if (action !== "publish") {
      refresh();
      return;
    }
    const typed = keyInput.value.trim();
    const key = typed || sessionStorage.getItem(KEY_STORE);
    if (!key) {
      keyRow.hidden = false;
      const note = document.getElementById("api_key-error");
      note.textContent = "write key: enter the write key to publish";
      note.hidden = false;
      keyInput.setAttribute("aria-invalid", "true");
      keyInput.focus();
      return;
    }
    const button = document.getElementById("publish-button");
    button.disabled = true;
    clearTimeout(timer);
    try {
      const status = await swap("/sell/publish", draft(), { "X-API-Key": key });
      if (status === 201) {
        sessionStorage.setItem(KEY_STORE, key);
        keyInput.value = "";
        form.reset();
        previews.replaceChildren();
      }
      showKeyState();
    } finally {
      button.disabled = false;
    }
  });

  showKeyState();
});
