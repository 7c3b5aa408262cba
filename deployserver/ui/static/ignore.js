// Which files of a dropped folder a push sends, as the command line decides it: every file
// but what .deployignore excludes (gitignore syntax) or, when the metadata lists "files",
// exactly what those patterns match; metadata.json, .deployignore, .git/ and __pycache__/
// are never sent.

const NEVER_FILES = new Set(["metadata.json", ".deployignore"]);
const NEVER_DIRS = new Set([".git", "__pycache__"]);

function globToRegex(glob) {
  let re = "";
  for (let i = 0; i < glob.length; i += 1) {
    const c = glob[i];
    if (c === "*") {
      if (glob[i + 1] === "*") {
        const before = i === 0 || glob[i - 1] === "/";
        const after = glob[i + 2] === "/" || i + 2 === glob.length;
        if (before && after) {
          if (glob[i + 2] === "/") {
            re += "(?:.*/)?";
            i += 2;
          } else {
            re += ".*";
            i += 1;
          }
          continue;
        }
      }
      re += "[^/]*";
    } else if (c === "?") {
      re += "[^/]";
    } else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) {
        re += "\\[";
      } else {
        let cls = glob.slice(i + 1, end);
        if (cls[0] === "!") cls = `^${cls.slice(1)}`;
        re += `[${cls.replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else if (c === "\\" && i + 1 < glob.length) {
      i += 1;
      re += glob[i].replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    } else {
      re += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    }
  }
  return re;
}

/** Rules from gitignore-style lines. */
export function compile(lines) {
  const rules = [];
  for (let raw of lines) {
    raw = raw.replace(/(?<!\\)\s+$/, "");
    if (!raw || raw.startsWith("#")) continue;
    let negate = false;
    if (raw.startsWith("!")) {
      negate = true;
      raw = raw.slice(1);
    } else if (raw.startsWith("\\!") || raw.startsWith("\\#")) {
      raw = raw.slice(1);
    }
    let dirOnly = false;
    if (raw.endsWith("/")) {
      dirOnly = true;
      raw = raw.slice(0, -1);
    }
    const anchored = raw.includes("/");
    raw = raw.replace(/^\//, "");
    if (!raw) continue;
    const body = globToRegex(raw);
    rules.push({ negate, dirOnly, re: new RegExp(`^${anchored ? "" : "(?:.*/)?"}${body}$`) });
  }
  return rules;
}

/**
 * Whether ``rules`` match the file ``path``, as the command line's matcher decides: a rule
 * matches a file or any folder above it, and the last rule that matches wins.
 */
export function matches(rules, path) {
  const parts = path.split("/");
  let matched = false;
  for (const rule of rules) {
    let hit = false;
    for (let depth = 1; depth <= parts.length && !hit; depth += 1) {
      if (rule.dirOnly && depth === parts.length) continue; // a folder rule, and this is the file
      hit = rule.re.test(parts.slice(0, depth).join("/"));
    }
    if (hit) matched = !rule.negate;
  }
  return matched;
}

/**
 * Split ``files`` ([{path, file}]) into what a push sends and what it leaves out, given
 * the folder's metadata and .deployignore text.
 */
export function select(files, metadata, ignoreText) {
  const kept = [];
  const left = [];
  const wanted = metadata && Array.isArray(metadata.files) ? compile(metadata.files) : null;
  const ignored = compile((ignoreText || "").split(/\r?\n/));
  for (const f of files) {
    const parts = f.path.split("/");
    const never = NEVER_FILES.has(f.path) || parts.slice(0, -1).some((p) => NEVER_DIRS.has(p));
    const send = !never && (wanted ? matches(wanted, f.path) : !matches(ignored, f.path));
    (send ? kept : left).push(f);
  }
  return { kept, left };
}
