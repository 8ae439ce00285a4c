#!/usr/bin/perl

# mdm_watch_pairs, the administrators' view of the pairs: a pair made by
# the whole flow as JSON, with its exact fields; the filters by watch,
# phone and serial, case-insensitive; 404 for a filter that finds
# nothing; 400 for a bad cursor, limit, format or filter, and for a
# cursor with a filter; 405 for other methods, in JSON for a JSON
# request; JSON or HTML by ?format= and Accept; values Redis holds that
# would break JSON or HTML; the HTML page grouped by phone, and with its
# search box and the reason when a request is refused; 503 without
# Redis or with a Redis that answers too much; and the configuration,
# with the default Redis when mdm_watch_redis is not given.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64url);
use POSIX qw(strftime);
use Test::More;

use MdmWatch::Metrics qw(status_page);
use MdmWatch::Pairs qw(pair store_pairs get_pairs json_strict);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup(locations => <<'END');
        location = /pairs {
            mdm_watch_pairs;
        }

        location = /status {
            mdm_watch_status;
        }
END

my $phone = $MdmWatch::Test::PHONE;
my $watch = $t->pki->udid;
my @fields = sort qw(watch_udid watch_serial watch_product watch_os_version
    phone_udid paired_at state);

# checks the headers every answer of the location carries
sub common_headers {
    my ($what, $res) = @_;
    is($res->{headers}{vary}, 'Accept', "$what: Vary: Accept");
    is($res->{headers}{'cache-control'}, 'no-store',
        "$what: Cache-Control: no-store");
    is($res->{headers}{'x-content-type-options'}, 'nosniff',
        "$what: X-Content-Type-Options: nosniff");
}

# a JSON answer: status, type, the common headers, a strict parse
sub json_ok {
    my ($what, $query, $status) = @_;
    my ($res, $json) = get_pairs($t, $query);
    is($res->{status}, $status, "$what: status $status")
        or diag(MdmWatch::Test::describe($res));
    is($res->{headers}{'content-type'}, 'application/json',
        "$what: JSON");
    common_headers($what, $res);
    ok(ref $json eq 'HASH', "$what: the body is valid JSON");
    return $json // {};
}

# 1. a pair made by the flow

my $t0 = time;
pair($t, $watch, $phone);
my $t1 = time;

my $before = $t->redis_snapshot;
my $upstream = $t->upstream_count;

my $json = json_ok('the pair of a watch', 'watch=' . lc $watch, 200);
is(scalar @{ $json->{pairs} // [] }, 1, 'the watch filter finds one pair');
my $p = $json->{pairs}[0] // {};
is_deeply([sort keys %$p], \@fields, 'the pair has exactly its seven fields');
is($p->{watch_udid}, $watch, 'watch_udid is the UDID in upper case');
is($p->{watch_serial}, 'WTCHSERIAL01', 'watch_serial is from machine info');
is($p->{watch_product}, 'Watch7,1', 'watch_product is from machine info');
is($p->{watch_os_version}, '10.0', 'watch_os_version is from machine info');
is($p->{phone_udid}, $phone, 'phone_udid is the phone of the pairing token');
is($p->{state}, 'paired', 'state is paired');
ok(grep({ $p->{paired_at} eq strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_) }
    $t0 .. $t1), 'paired_at is the time of pairing, RFC 3339 in UTC')
    or diag("paired_at: $p->{paired_at}");
ok(exists $json->{next} && !defined $json->{next},
    'a filtered answer has next: null');
is_deeply([sort keys %$json], ['next', 'pairs'],
    'the answer has pairs and next only');

my $by_phone = json_ok('the pairs of a phone', 'phone=' . lc $phone, 200);
is_deeply($by_phone->{pairs}, [$p],
    'the phone filter, in lower case, finds the same pair');
my $by_serial = json_ok('the pair by serial', 'serial=wtchserial01', 200);
is_deeply($by_serial->{pairs}, [$p],
    'the serial filter, in lower case, finds the same pair');
my $by_q = json_ok('the search box, by serial', 'q=WTCHSERIAL01', 200);
is_deeply($by_q->{pairs}, [$p], 'q= finds the pair by its serial');
$by_q = json_ok('the search box, by phone', 'q=' . lc $phone, 200);
is_deeply($by_q->{pairs}, [$p], 'q= finds the pair by its phone');

my $all = json_ok('the listing', '', 200);
is_deeply($all->{pairs}, [$p], 'the listing holds the one pair');
ok(exists $all->{next} && !defined $all->{next},
    'the only page has next: null');

is($t->upstream_count, $upstream, 'the MDM server received nothing');
$t->redis_unchanged_ok($before, 'reading the pairs changes nothing in Redis');

# 2. filters that find nothing, and requests that are refused

for my $case (
    ['an unknown watch', 'watch=00008301-00000000000000FF'],
    ['an unknown phone', 'phone=00008110-00000000000000FF'],
    ['an unknown serial', 'serial=NOSUCHSERIAL'],
    ['an unknown search', 'q=nothing-here'],
) {
    my ($what, $query) = @$case;
    my $err = json_ok($what, $query, 404);
    ok(defined $err->{error} && !exists $err->{pairs},
        "$what: the body is {\"error\": ...}");
}

for my $case (
    ['a cursor that is not base64url', 'cursor=!!!'],
    ['a cursor too long', 'cursor=' . ('QUFB' x 60)],
    ['a cursor with stray bits', 'cursor=AB'],
    ['a cursor with padding', 'cursor=QUE='],
    ['a cursor in base64, not base64url', 'cursor=Pz8/'],
    ['an empty cursor', 'cursor='],
    ['a cursor with a filter',
        'cursor=' . encode_base64url($watch) . "&watch=$watch"],
    ['a cursor with the search box',
        'cursor=' . encode_base64url($watch) . '&q=WTCHSERIAL01'],
    ['limit=0', 'limit=0'],
    ['limit=1001', 'limit=1001'],
    ['a limit that is no number', 'limit=ten'],
    ['a negative limit', 'limit=-5'],
    ['an unknown format', 'format=xml'],
    ['two filters', "watch=$watch&phone=$phone"],
    ['a watch filter that is no UDID', 'watch=not_a_udid!'],
    ['a phone filter that is no UDID', 'phone=' . ('A' x 65)],
    ['an argument too long', 'serial=' . ('S' x 300)],
    ['an empty limit', 'limit='],
    ['an empty watch filter', 'watch='],
    ['an empty phone filter', 'phone='],
    ['an empty serial filter', 'serial='],
    ['an empty format', 'format='],
) {
    my ($what, $query) = @$case;
    my $mark = $t->log_mark;
    my $err = json_ok($what, $query, 400);
    ok(defined $err->{error}, "$what: the body is {\"error\": ...}");
    $t->log_like(qr/\[info\][^\n]*pairs request refused/,
        "$what: logged at the info level", $mark);
}

{
    my $json = json_ok('a cursor as the module writes it',
        'cursor=' . encode_base64url('0'), 200);
    is_deeply([map { $_->{watch_udid} } @{ $json->{pairs} // [] }],
        [$watch], 'a cursor without padding is accepted');
}

for my $method (qw(POST PUT DELETE)) {
    my $res = $t->request(method => $method, uri => '/pairs', body => 'x');
    is($res->{status}, 405, "$method is not allowed");
    is($res->{headers}{allow}, 'GET, HEAD', "$method: Allow: GET, HEAD");
    common_headers($method, $res);
    like($res->{headers}{'content-type'} // '', qr{^text/html},
        "$method: an HTML request gets nginx's page");
}

# a JSON request is refused in JSON, like every other error
for my $case (
    ['POST with ?format=json', 'format=json', []],
    ['POST with Accept: application/json', '',
        [['Accept', 'application/json']]],
    ['POST with ?format=json and a bad limit', 'format=json&limit=0', []],
) {
    my ($what, $query, $headers) = @$case;
    my $res = $t->request(method => 'POST', uri => "/pairs?$query",
        headers => $headers, body => 'x');
    is($res->{status}, 405, "$what: 405");
    is($res->{headers}{allow}, 'GET, HEAD', "$what: Allow: GET, HEAD");
    is($res->{headers}{'content-type'}, 'application/json', "$what: JSON");
    my $err = json_strict($res->{body} // '');
    ok(ref $err eq 'HASH' && defined $err->{error} && !exists $err->{pairs},
        "$what: the body is {\"error\": ...}");
    common_headers($what, $res);
}

{
    my $res = $t->request(method => 'HEAD', uri => '/pairs?format=json');
    is($res->{status}, 200, 'HEAD is answered 200');
    is($res->{body}, '', 'HEAD has no body');
    ok($res->{headers}{'content-length'} > 0,
        'HEAD has the Content-Length of the JSON');
}

# 3. the format

for my $case (
    ['no Accept', [], '', 'text/html; charset=utf-8'],
    ['a browser\'s Accept',
        [['Accept', 'text/html,application/xhtml+xml,*/*;q=0.8']], '',
        'text/html; charset=utf-8'],
    ['Accept: application/json', [['Accept', 'application/json']], '',
        'application/json'],
    ['?format=json without Accept', [], 'format=json', 'application/json'],
    ['?format=html with Accept: application/json',
        [['Accept', 'application/json']], 'format=html',
        'text/html; charset=utf-8'],
) {
    my ($what, $headers, $query, $type) = @$case;
    my $res = $t->request(uri => "/pairs?$query", headers => $headers);
    is($res->{status}, 200, "$what: 200");
    is($res->{headers}{'content-type'}, $type, "$what: $type");
}

# Accept is read as media ranges with their qualities: JSON when
# application/json is preferred to text/html, by quality, or by order at
# the same quality
my $JSON = 'application/json';
my $HTML = 'text/html; charset=utf-8';
for my $case (
    ['application/jsonx', $HTML],
    ['xapplication/json', $HTML],
    ['application/json-patch+json', $HTML],
    ['application/json;q=0', $HTML],
    ['application/json; q=0.000, text/plain', $HTML],
    ['application/json;q=2', $HTML],
    ['application/json;q=abc', $HTML],
    ['Application/JSON', $JSON],
    ['application/json ; charset=utf-8 ; q=0.8 , text/html;q=0.7', $JSON],
    ['text/html;q=0.5, application/json', $JSON],
    ['text/html, application/json;q=0.9', $HTML],
    ['application/json, text/html', $JSON],
    ['text/html, application/json', $HTML],
    ['text/html;level="1,2";q=0.1, application/json', $JSON],
    ['*/*;q=0.1, application/json', $JSON],
    ['application/json;q=0.5, */*', $HTML],
    ['application/json, */*', $JSON],
    ['*/*', $HTML],
    ['application/*', $JSON],
    ['text/*;q=0.3, application/json;q=0.4', $JSON],
    ['text/html;q=0, application/json;q=0.001', $JSON],
    [['text/html', 'application/json'], $HTML],
    [['application/json', 'text/html'], $JSON],
    [['text/html;q=0.9', 'application/json'], $JSON],
) {
    my ($accept, $type) = @$case;
    my @values = ref $accept ? @$accept : ($accept);
    my $what = 'Accept: ' . join(' then Accept: ', @values);
    my $res = $t->request(uri => '/pairs',
        headers => [map { ['Accept', $_] } @values]);
    is($res->{status}, 200, "$what: 200");
    is($res->{headers}{'content-type'}, $type,
        "$what: " . ($type eq $JSON ? 'JSON' : 'HTML'));
}

# 4. values Redis holds that would break JSON or HTML

my $evil_watch = '00008301-0000000000000E01';
my $evil_phone = '00008110-0000000000000E01';
my %evil = (
    watch      => $evil_watch,
    phone      => $evil_phone,
    serial     => qq{Q"\\</script><script>alert(1)</script>},
    product    => "ctl\x00\x01\x1f\x7f-end",
    os_version => "bad\xc3\x28utf8\xff\xfe\xed\xa0\x80",
    version    => 'x',
    paired_at  => 'not a time',
    state      => qq{<img src=x onerror='alert(2)'>&},
);
store_pairs($t, \%evil);

$json = json_ok('hostile values', "watch=$evil_watch", 200);
$p = $json->{pairs}[0] // {};
is($p->{watch_serial}, $evil{serial},
    'quotes, backslashes and </script> come back as they are');
is($p->{watch_product}, "ctl\x00\x01\x1f\x7f-end",
    'control characters come back as they are');
is($p->{watch_os_version}, "bad\x{fffd}(utf8\x{fffd}\x{fffd}"
    . "\x{fffd}\x{fffd}\x{fffd}",
    'bytes that are not UTF-8 come back as U+FFFD');
ok(exists $p->{paired_at} && !defined $p->{paired_at},
    'a paired_at that is no time is null');
is($p->{state}, $evil{state}, 'markup in state comes back as it is');
{
    my ($res) = get_pairs($t, "watch=$evil_watch");
    unlike($res->{body}, qr/[<>&'\x00-\x1f]/,
        'the JSON holds no markup character and no control byte raw');
}

my $res = $t->request(uri => "/pairs?watch=$evil_watch&format=html");
is($res->{status}, 200, 'the HTML page of hostile values: 200');
my $html = $res->{body};
my @scripts = $html =~ /<script\b/g;
is(scalar @scripts, 1, 'the page holds its own script element only');
unlike($html, qr/<img/, 'no element comes from the data');
like($html, qr/Q&quot;\\&lt;\/script&gt;&lt;script&gt;alert\(1\)/,
    'the serial is HTML-escaped');
like($html, qr/&lt;img src=x onerror=&#39;alert\(2\)&#39;&gt;&amp;/,
    'the state is HTML-escaped, apostrophes too');
unlike($html, qr/[\x00-\x08\x0b\x0c\x0e-\x1f]/,
    'no control byte reaches the page');
common_headers('the HTML page', $res);
is($res->{headers}{'content-type'}, 'text/html; charset=utf-8',
    'the page is HTML in UTF-8');
my $csp = $res->{headers}{'content-security-policy'} // '';
like($csp, qr/^default-src 'none'; style-src 'sha256-[A-Za-z0-9+\/=]+'; /,
    'the page allows its own style only, by hash');
like($csp, qr/; script-src 'sha256-[A-Za-z0-9+\/=]+';/,
    'the page allows its own script only, by hash');
unlike($csp, qr/unsafe/, 'the page allows nothing unsafe');

# the hashes are those of the page's style and script
{
    require Digest::SHA;
    require MIME::Base64;
    my ($style) = $html =~ m{<style>(.*?)</style>}s;
    my ($script) = $html =~ m{<script>(.*?)</script>}s;
    my $hash = sub {
        "'sha256-" . MIME::Base64::encode_base64(Digest::SHA::sha256($_[0]),
            '') . "'";
    };
    ok(index($csp, $hash->($style)) > 0, 'the style hash is in the policy');
    ok(index($csp, $hash->($script)) > 0, 'the script hash is in the policy');
}

$t->redis('DEL', "mdm_watch:pair:$evil_watch",
    "mdm_watch:phone:$evil_phone", 'mdm_watch:serial:' . uc $evil{serial});
$t->redis('ZREM', 'mdm_watch:pairs', $evil_watch);

# 5. the page groups the pairs by phone

my @phones = map { sprintf '00008110-0000000000000A%02d', $_ } 1 .. 2;
my @group = (
    { watch => '00008301-0000000000000B03', phone => $phones[0],
      serial => 'SER03' },
    { watch => '00008301-0000000000000B01', phone => $phones[1],
      serial => 'SER01', state => 'unpaired' },
    { watch => '00008301-0000000000000B02', phone => $phones[0],
      serial => 'SER02' },
);
store_pairs($t, @group);

$res = $t->request(uri => '/pairs');
is($res->{status}, 200, 'the page of all pairs: 200');
my @sections = $res->{body} =~ m{<section>(.*?)</section>}gs;
my %rows;
for my $s (@sections) {
    my ($ph) = $s =~ m{<h2>Phone <code>([^<]*)</code></h2>};
    $rows{$ph} = [ $s =~ m{<td data-label="Watch"><code>([^<]*)</code>}g ];
}
is(scalar @sections, 3, 'one section per phone');
is_deeply($rows{ $phones[0] },
    ['00008301-0000000000000B02', '00008301-0000000000000B03'],
    'the first phone lists its two watches, in order');
is_deeply($rows{ $phones[1] }, ['00008301-0000000000000B01'],
    'the second phone lists its watch');
is_deeply($rows{$phone}, [$watch], 'the flow\'s phone lists its watch');
like($res->{body},
    qr{<tr class="unpaired" data-search="00008301-0000000000000B01 SER01">},
    'an unpaired watch is marked, and searchable by UDID and serial');
like($res->{body}, qr{<meta name="viewport" content="width=device-width},
    'the page has a viewport for phones');
like($res->{body}, qr{<input id="q" name="q" type="search"},
    'the page has a search box');
unlike($res->{body}, qr{rel="next"}, 'the only page has no next link');

$res = $t->request(uri => '/pairs?limit=2');
like($res->{body},
    qr{<a\ rel="next"\ href="\?cursor=[A-Za-z0-9_-]+
       &amp;format=html&amp;limit=2">}x,
    'a page with more after it links to the next, as HTML whatever the'
    . ' browser accepts');

$res = $t->request(uri => '/pairs?q=ser02');
is($res->{status}, 200, 'a search on the page by serial: 200');
like($res->{body}, qr{value="ser02"}, 'the search box keeps the search');
is(() = $res->{body} =~ /<tr /g, 1, 'the search shows the one pair found');

$res = $t->request(uri => '/pairs?q=%3Cb%3Enothing');
is($res->{status}, 404, 'a search on the page that finds nothing: 404');
like($res->{body}, qr{value="&lt;b&gt;nothing"},
    'the page shows the search, escaped');
like($res->{body}, qr{No pairs found}, 'the page says nothing was found');

# the search box's text that can be neither a UDID nor a serial finds
# nothing, as any other search would
{
    my $long = 'S' x 100;
    $res = $t->request(uri => "/pairs?q=$long");
    is($res->{status}, 404, 'a search of 100 bytes on the page: 404');
    like($res->{body}, qr{value="$long"}, 'the search box keeps it');
    like($res->{body}, qr{No pairs found}, 'the page says nothing was found');

    my $err = json_ok('a search of 100 bytes in JSON', "q=$long", 404);
    ok(defined $err->{error}, 'a search of 100 bytes in JSON: {"error": ...}');
    $err = json_ok('serial= of 65 bytes in JSON', 'serial=' . ('S' x 65),
        400);
    is($err->{error}, 'serial longer than 64 bytes',
        'serial= of 65 bytes says why it is refused');
}

# a request refused shows the page, with the search box and the reason
for my $case (
    ['limit=0 on the page', 'limit=0', qr{limit must be a number}, ''],
    ['a search of 300 bytes on the page', 'q=' . ('Q' x 300),
        qr{no longer than 256 bytes}, ''],
    ['a search with a cursor on the page',
        'q=%3Cb%3E&cursor=' . encode_base64url($watch),
        qr{not with a filter}, '&lt;b&gt;'],
) {
    my ($what, $query, $reason, $box) = @$case;
    my $mark = $t->log_mark;
    $res = $t->request(uri => "/pairs?$query");
    is($res->{status}, 400, "$what: 400");
    is($res->{headers}{'content-type'}, 'text/html; charset=utf-8',
        "$what: the pairs page");
    like($res->{body}, qr{<input id="q" name="q" [^>]* value="\Q$box\E">},
        "$what: the page has the search box, with the search escaped");
    like($res->{body}, qr{<p role="alert">Not looked up: [^<]*$reason},
        "$what: the page says why");
    unlike($res->{body}, qr{<section>|No pairs found},
        "$what: the page lists no pairs");
    like($res->{headers}{'content-security-policy'} // '',
        qr/^default-src 'none'/, "$what: under the page's policy");
    common_headers($what, $res);
    $t->log_like(qr/\[info\][^\n]*pairs request refused/,
        "$what: logged at the info level", $mark);
}

# the first page answered otherwise than 503, once the worker has
# connected to the Redis just started, within $limit seconds
sub past_503 {
    my ($limit) = @_;
    my $deadline = time + MdmWatch::Test::slow($limit);
    my ($res, $json);
    while (time < $deadline) {
        ($res, $json) = get_pairs($t, '');
        last if ($res->{status} // 0) != 503;
        select undef, undef, undef, 0.05;
    }
    return ($res, $json);
}

# 6. without Redis

# the counters of the answers that are not the client's doing
sub counted {
    my ($what, $send, %delta) = @_;
    my $before = status_page($t)->{value};
    $send->();
    my $after = status_page($t)->{value};
    for my $c (sort keys %delta) {
        is($after->{$c} - $before->{$c}, $delta{$c},
            "$what: $c moves by $delta{$c}");
    }
}

$t->stop_redis;
counted('without Redis', sub {
    my $err = json_ok('without Redis', '', 503);
    ok(defined $err->{error}, 'without Redis: {"error": ...}');
    my ($r2) = get_pairs($t, '');
    is($r2->{status}, 503, 'without Redis, again: 503');
    is($r2->{headers}{'retry-after'}, '5', 'without Redis: Retry-After');
}, mdm_watch_unavailable_total => 2, mdm_watch_internal_errors_total => 0);

# a Redis that answers with more than a page of pairs can take: the
# connection is dropped once 2 MB are buffered, and the answer is 503
{
    my $what = 'a Redis answering a page with 4 MB of a 64 MB string';
    $t->start_fake_redis('--mode', 'oversized', '--announce', 64 << 20,
        '--send', 4 << 20);
    my $mark = $t->log_mark;
    my $deadline = time + MdmWatch::Test::slow(5);
    my ($r2, $seen);
    while (!$seen && time < $deadline) {
        ($r2) = get_pairs($t, 'limit=1000');
        $seen = substr($t->error_log, $mark)
            =~ /reply larger than 2097152 bytes/;
        select undef, undef, undef, 0.05 unless $seen;
    }
    ok($seen, "$what: the error log says the reply was too large");
    is($r2->{status}, 503, "$what: 503");
    $t->stop_redis;
}

# a Redis whose script answers something else than pairs
{
    my $what = 'a Redis answering an integer to the page script';
    $t->start_fake_redis('--mode', 'normal', '--eval-reply', 1);
    my $mark = $t->log_mark;
    my ($r2, $j2) = past_503(5);
    is($r2->{status}, 500, "$what: 500");
    counted($what, sub {
        my ($r3) = get_pairs($t, '');
        is($r3->{status}, 500, "$what, again: 500");
    }, mdm_watch_internal_errors_total => 1, mdm_watch_unavailable_total => 0);
    ok(defined $j2->{error}, "$what: {\"error\": ...}");
    $t->log_like(qr/\[error\][^\n]*unexpected redis reply[^\n]*pairs/,
        "$what: the error log says what came", $mark);
    $t->stop_redis;
}

$t->start_redis;

# index entries without a record, or whose record is no hash, which the
# module never leaves, are read past: pages are full but for the last,
# and a key of the wrong type is no reason to answer 503

{
    # the worker connects again after its backoff
    past_503(10);

    my $what = 'an index with 3,000 entries whose records are gone';
    my @dead = map { sprintf '00008301-E%015X', $_ } 0 .. 2999;
    MdmWatch::Pairs::pipeline($t,
        map { ['ZADD', 'mdm_watch:pairs', 0, $_] } @dead);
    my @live = map { sprintf '00008301-F%015X', $_ } 1 .. 3;
    store_pairs($t, map { { watch => $_, phone => $phone } } @live);
    $t->redis('SET', 'mdm_watch:pair:00008301-D000000000000000', 'x');
    $t->redis('ZADD', 'mdm_watch:pairs', 0, '00008301-D000000000000000');

    my $json = json_ok("$what: the first page", 'limit=2', 200);
    is_deeply([map { $_->{watch_udid} } @{ $json->{pairs} // [] }],
        [@live[0, 1]], "$what: the first page holds two live pairs");
    $json = json_ok("$what: the second page",
        'limit=2&cursor=' . encode_base64url($live[1]), 200);
    is_deeply([map { $_->{watch_udid} } @{ $json->{pairs} // [] }],
        [$live[2]], "$what: the second page holds the last");
    is($json->{next}, undef, "$what: and is the last");

    for my $case (['watch', '00008301-D000000000000000'],
                  ['phone', '00008110-D000000000000000'],
                  ['serial', 'WRONGTYPE01'])
    {
        my ($filter, $id) = @$case;
        my $key = $filter eq 'watch' ? "mdm_watch:pair:$id"
                : $filter eq 'phone' ? "mdm_watch:phone:$id"
                :                      "mdm_watch:serial:$id";
        $t->redis('DEL', $key);
        $t->redis('HSET', $key, 'x', 'y') if $filter ne 'watch';
        $t->redis('SET', $key, 'x') if $filter eq 'watch';
        json_ok("$filter= of a key of the wrong type", "$filter=$id", 404);
    }
}

# 7. the configuration

{
    my $c = MdmWatch::Test->new;
    $c->write_config($c->default_http(redis => undef, locations => <<'END'));
        location = /pairs {
            mdm_watch_pairs;
        }
END
    my ($code, $out) = $c->nginx_test;
    is($code, 0, 'mdm_watch_pairs without mdm_watch_redis is accepted:'
        . ' it reads the default Redis, 127.0.0.1:6379')
        or diag($out);

    $c->write_config($c->default_http(locations => <<'END'));
        location = /pairs {
            mdm_watch_pairs;
            mdm_watch_pairs;
        }
END
    ($code, $out) = $c->nginx_test;
    like($out, qr/"mdm_watch_pairs" directive is duplicate/,
        'mdm_watch_pairs twice in a location is refused');

    for my $other (qw(mdm_watch_enroll mdm_watch_checkin)) {
        for my $order ([$other, 'mdm_watch_pairs'],
                       ['mdm_watch_pairs', $other])
        {
            $c->write_config($c->default_http(locations => <<"END"));
        location = /pairs {
            $order->[0];
            $order->[1];
        }
END
            ($code, $out) = $c->nginx_test;
            like($out, qr/"$order->[1]" directive cannot be combined/,
                "$order->[1] after $order->[0] in a location is refused");
        }
    }
}

$t->finish;
