-- remote-directory: a Dovecot passdb that asks remote-directoryd whether a password is right.
--
-- Dovecot 2.4 removed the checkpassword passdb; this script takes its place. It posts each
-- login, as JSON, to the daemon's auth_http endpoint (`daemon.auth-http.listen`), which
-- checks it against the remote server of the directory chosen for the service, with the
-- daemon's pools, caches and throttles. The daemon's answer is in the HTTP status: 200
-- accepted, 403 refused, anything else (503, no answer) a temporary failure, never a
-- wrong password.
--
-- Dovecot 2.4 (dovecot.conf):
--   passdb lua {
--     lua_file = /usr/local/share/remote-directory/dovecot-passdb.lua
--     lua_settings {
--       url = http://127.0.0.1:9143/dovecot
--     }
--   }
-- Dovecot 2.3 (package dovecot-auth-lua) passes no settings to scripts; the URL comes from
-- the environment instead:
--   import_environment = $import_environment REMOTE_DIRECTORY_URL=http://127.0.0.1:9143/dovecot
--   passdb {
--     driver = lua
--     args = file=/usr/local/share/remote-directory/dovecot-passdb.lua
--   }
-- A userdb is still needed (static, passwd-file, ...): this passdb only checks passwords.

local url = os.getenv("REMOTE_DIRECTORY_URL") or "http://127.0.0.1:9143/dovecot"
-- Longer than the daemon's longest answer (the directory's `timeout` plus
-- `pool.timeout.wait`), so the daemon's verdict arrives before this gives up.
local timeout_secs = 75
local client = nil

-- The HTTP client: Dovecot 2.3 takes its own setting names and ignores unknown ones; 2.4
-- takes Dovecot's http_client_* settings without the prefix and refuses unknown ones. So
-- the 2.3 form is tried first; on 2.4 it fails and the 2.4 form is used.
local function new_client()
  local ok, made = pcall(dovecot.http.client, {
    request_timeout_msecs = timeout_secs * 1000,
    max_attempts = 1,
  })
  if ok then
    return made
  end
  return dovecot.http.client({
    request_timeout = tostring(timeout_secs) .. "s",
    request_max_attempts = "1",
  })
end

function script_init(args)
  if type(args) == "table" then
    url = args["url"] or url
    timeout_secs = tonumber(args["timeout_secs"]) or timeout_secs
  end
  client = new_client()
  return 0
end

-- A JSON string: quote, backslash and control bytes escaped; UTF-8 passes as it is.
local function json_string(value)
  local escaped = string.gsub(tostring(value or ""), '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

function auth_password_verify(req, password)
  local body = "{"
    .. '"user":' .. json_string(req.user)
    .. ',"password":' .. json_string(password)
    .. ',"service":' .. json_string(req.service)
    .. ',"client_ip":' .. json_string(req.rip)
    .. "}"
  local request = client:request({ url = url, method = "POST" })
  request:add_header("Content-Type", "application/json")
  request:set_payload(body)
  local response = request:submit()
  local status = response:status()
  if status == 200 then
    return dovecot.auth.PASSDB_RESULT_OK, {}
  elseif status == 403 then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "refused by the remote server"
  end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE,
    "remote-directoryd: " .. tostring(status) .. " " .. tostring(response:reason())
end
