-- The requests of one benchmark row, for wrk, chosen by BENCH_MODE:
--
--   fixed     one request again and again: BENCH_METHOD, BENCH_PATH,
--             BENCH_TYPE, the body in the file BENCH_BODY (none if
--             unset); BENCH_EXPECT is its expected status
--   gettoken  GetTokens, each with a security token of its own:
--             SecurityToken 00000000-0000-4000-8000-<12 digits>, from
--             BENCH_FIRST on, thread after thread BENCH_SPAN apart;
--             BENCH_GETTOKEN is the body, with @TOKEN@ in its place
--   mint      GetTokens as above, writing the TokenData of the first
--             BENCH_COUNT answers on lines of BENCH_MINT.<thread>
--   pairing   challenge, GetToken, enrollment with a pairing token, in
--             turn; the enrollments are the records of
--             BENCH_ENROLL.<thread>, and BENCH_CHALLENGE is the machine
--             info of the challenges
--   mixed     BENCH_MIX, a word of the letters t (TokenUpdate), c
--             (command report), g (GetToken), w (watch challenge) and
--             p (plain GET /), in turn
--
-- BENCH_DELAY, in milliseconds, makes each connection wait that long
-- before each request, for a load of a bounded rate.
--
-- Each thread counts the answers it did not expect; done() prints one
-- line that bench/bench.pl reads:
--
--   BENCH requests=N seconds=S rate=R p50_us=U p99_us=U bad=N
--         errors=N

local mode = os.getenv("BENCH_MODE") or "fixed"
local threads = {}
local counter = 0

local function slurp(name)
    local f = assert(io.open(name, "rb"))
    local data = f:read("*a")
    f:close()
    return data
end

-- records: a decimal length, a newline, that many bytes
local function records(name)
    local data = slurp(name)
    local list = {}
    local pos = 1

    while pos <= #data do
        local nl = data:find("\n", pos, true)
        local len = tonumber(data:sub(pos, nl - 1))
        list[#list + 1] = data:sub(nl + 1, nl + len)
        pos = nl + 1 + len
    end

    return list
end

local checkin_type = "application/x-apple-aspen-mdm-checkin"
local cms_type = "application/pkcs7-signature"

-- a watch POSTs its machine info, a device PUTs its check-ins
local function post(path, ctype, body)
    local method = path:find("enroll", 1, true) and "POST" or "PUT"
    return wrk.format(method, path, { ["Content-Type"] = ctype }, body)
end

function setup(thread)
    thread:set("id", #threads)
    threads[#threads + 1] = thread
end

function init(args)
    bad = 0
    sent = 0
    got = {}

    if mode == "fixed" then
        local body = os.getenv("BENCH_BODY")
        local headers = {}
        if os.getenv("BENCH_TYPE") then
            headers["Content-Type"] = os.getenv("BENCH_TYPE")
        end
        fixed = wrk.format(os.getenv("BENCH_METHOD") or "GET",
                           os.getenv("BENCH_PATH") or "/", headers,
                           body and slurp(body) or nil)
        expect = tonumber(os.getenv("BENCH_EXPECT") or "200")
        return
    end

    local span = tonumber(os.getenv("BENCH_SPAN") or "10000000")
    next_token = tonumber(os.getenv("BENCH_FIRST") or "0") + id * span
    limit = tonumber(os.getenv("BENCH_COUNT") or "0")

    if os.getenv("BENCH_GETTOKEN") then
        gettoken = slurp(os.getenv("BENCH_GETTOKEN"))
    end

    if mode == "mint" then
        mint = assert(io.open(os.getenv("BENCH_MINT") .. "." .. id, "w"))
        minted = 0
    end

    if mode == "pairing" then
        challenge = post("/mdm/enroll/watch", cms_type,
                         slurp(os.getenv("BENCH_CHALLENGE")))
        enroll = {}
        for i, body in ipairs(records(os.getenv("BENCH_ENROLL") .. "." .. id))
        do
            enroll[i] = post("/mdm/enroll/watch", cms_type, body)
        end
        step = 0
    end

    if mode == "mixed" then
        mix = os.getenv("BENCH_MIX")
        step = 0
        plain = wrk.format("GET", "/")
        challenge = post("/mdm/enroll/watch", cms_type,
                         slurp(os.getenv("BENCH_CHALLENGE")))
        token_update = post("/mdm/checkin", checkin_type,
                            slurp(os.getenv("BENCH_TOKEN_UPDATE")))
        command = post("/mdm/checkin", "application/x-apple-aspen-mdm",
                       slurp(os.getenv("BENCH_COMMAND")))
    end
end

local function next_gettoken()
    local token = string.format("%012d", next_token)
    next_token = next_token + 1
    return post("/mdm/checkin", checkin_type,
                (gettoken:gsub("@TOKEN@", token)))
end

local pause = tonumber(os.getenv("BENCH_DELAY") or "0")

if pause > 0 then
    function delay()
        return pause
    end
end

function request()
    sent = sent + 1

    if mode == "fixed" then
        return fixed

    elseif mode == "gettoken" or mode == "mint" then
        return next_gettoken()

    elseif mode == "pairing" then
        step = step + 1
        local kind = step % 3
        if kind == 1 then
            return challenge
        elseif kind == 2 then
            return next_gettoken()
        end
        local n = (step - kind) / 3
        if n > #enroll then
            -- out of pairing tokens: an answer that counts as bad
            n = #enroll
        end
        return enroll[n]

    elseif mode == "mixed" then
        step = step + 1
        local c = mix:sub((step - 1) % #mix + 1, (step - 1) % #mix + 1)
        if c == "t" then return token_update end
        if c == "c" then return command end
        if c == "g" then return next_gettoken() end
        if c == "w" then return challenge end
        return plain
    end
end

-- what an answer is: a challenge, a pairing token, a profile (ok) or
-- other
local function kind(status, body)
    if status == 403 and body:find("security-token", 1, true) then
        return "challenge"
    end
    if status == 200 and body:find("<key>TokenData</key>", 1, true) then
        return "token"
    end
    if status == 200 then
        return "ok"
    end
    return "other"
end

function response(status, headers, body)
    if mode == "fixed" then
        if expect ~= 0 and status ~= expect then
            bad = bad + 1
        end
        return
    end

    local k = kind(status, body)
    got[k] = (got[k] or 0) + 1

    if mode == "gettoken" and k ~= "token" then
        bad = bad + 1

    elseif mode == "mint" then
        -- past the count, tokens run out: those answers do not count
        if minted >= limit then
            return
        end
        if k ~= "token" then
            bad = bad + 1
        else
            mint:write(body:match("<data>([^<]*)</data>"), "\n")
            minted = minted + 1
            if minted >= limit then
                mint:close()
            end
        end

    elseif k == "other" then
        bad = bad + 1
    end
end

function done(summary, latency, requests)
    local bad_total = 0
    local sent = 0
    local kinds = {}

    for _, t in ipairs(threads) do
        bad_total = bad_total + t:get("bad")
        sent = sent + t:get("sent")
        for k, n in pairs(t:get("got") or {}) do
            kinds[k] = (kinds[k] or 0) + n
        end
    end

    -- every enrollment ends in a profile: one that ended in a challenge
    -- (its token spent or refused) counts beyond the challenges sent
    if mode == "pairing" then
        local challenges = math.ceil(sent / 3)
        if (kinds["challenge"] or 0) > challenges then
            bad_total = bad_total + kinds["challenge"] - challenges
        end
    end

    -- statuses are checked above: 403 is the answer of a challenge
    local e = summary.errors
    local seconds = summary.duration / 1e6
    local line = string.format(
        "BENCH requests=%d seconds=%.3f rate=%.1f p50_us=%d p99_us=%d"
        .. " bad=%d errors=%d",
        summary.requests, seconds, summary.requests / seconds,
        latency:percentile(50), latency:percentile(99), bad_total,
        e.connect + e.read + e.write + e.timeout)

    for k, n in pairs(kinds) do
        line = line .. string.format(" %s=%d", k, n)
    end

    io.write(line, "\n")
end
