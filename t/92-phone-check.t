#!/usr/bin/perl

# mdm_watch_phone_check: for a phone it has not recorded, the check-in
# location asks the MDM server, with a subrequest to the given uri
# (2xx: enrolled, 4xx: not; any other answer is a 503 and not kept),
# and keeps the answer in Redis for mdm_watch_phone_check_valid, so
# that the next GetToken of that phone needs no subrequest.  A phone the
# module has recorded needs none either.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);

use MdmWatch::Message qw(parse_token_data token_update);
use MdmWatch::Test;

my $t = MdmWatch::Test->new;
my $watch = $t->pki->udid;
my $phone = $MdmWatch::Test::PHONE;

# phones the MDM server knows, and phones it answers otherwise
my $known = '00008110-0000000000000B01';
my $stranger = '00008110-0000000000000B02';
my $lower = lc '00008110-0000000000000B0C';
my $forbidden = '00008110-0000000000000B04';
my $failing = '00008110-0000000000000B05';

# the stand-in answers every path 200: X-Standin-Status makes it answer
# the check of a phone it does not know with 404 or 403, and fail it
# with 502
sub config {
    my ($http) = @_;
    return $t->default_http(
        http => <<"END" . ($http // ''),
    map \$mdm_watch_phone_udid \$phone_check_status {
        default     "";
        $stranger   404;
        $forbidden  403;
        $failing    502;
    }
END
        checkin => "            mdm_watch_phone_check /phone-check;\n",
        locations => <<'END');
        location = /phone-check {
            internal;
            proxy_pass http://mdm/devices/$mdm_watch_phone_udid;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Standin-Status $phone_check_status;
        }
END
}

$t->start_redis;
$t->start_upstream;
$t->write_config(config());
$t->start_nginx;
$t->enroll_phone_ok($phone);

sub check_key { 'mdm_watch:phone_check:' . uc $_[0] }

# what the MDM server was asked about a phone
sub checks_of {
    my ($udid) = @_;
    return grep { $_->{uri} eq '/devices/' . uc $udid }
        $t->upstream_requests;
}

sub get_token_of {
    my ($udid) = @_;
    my $st = $t->challenge(UDID => $watch) // die 'no challenge';
    my $res = $t->get_token_response(udid => $udid, security_token => $st,
        watch_udid => $watch);
    return ($res, $st);
}

sub answered {
    my ($what, $udid) = @_;
    my ($res, $st) = get_token_of($udid);
    is($res->{status}, 200, "$what is answered 200")
        or diag(MdmWatch::Test::describe($res));
    ok(length(parse_token_data($res->{body}) // ''), "$what: TokenData");
    is($t->redis('EXISTS', "mdm_watch:security_token:$st"), 0,
        "$what: the security token is used up");
    return $res;
}

sub refused {
    my ($what, $udid) = @_;
    my ($res, $st) = get_token_of($udid);
    is($res->{status}, 403, "$what is answered 403")
        or diag(MdmWatch::Test::describe($res));
    is(parse_token_data($res->{body}), undef, "$what: no TokenData");
    is($t->redis('GET', "mdm_watch:security_token:$st"), $watch,
        "$what: the security token is still there");
    return $res;
}

sub cached_ok {
    my ($what, $udid, $value, $ttl) = @_;
    my $key = check_key($udid);
    is($t->redis('TYPE', $key), 'string', "$what: $key is a string");
    is($t->redis('GET', $key), $value, "$what: the cache says $value");
    my $left = $t->redis_ttl($key);
    ok($left > $ttl - 10 && $left <= $ttl,
        "$what: the cache expires after mdm_watch_phone_check_valid"
        . " (${ttl}s)") or diag("TTL $left");
}

# a phone the MDM server knows

{
    my $what = 'a GetToken of a phone the module has not recorded, but the'
        . ' MDM server knows';
    my $others = grep { $_->{uri} !~ m{^/devices/} } $t->upstream_requests;
    answered($what, $known);
    my @checks = checks_of($known);
    is(scalar @checks, 1, "$what: the MDM server was asked once, at"
        . " /devices/$known");
    is($checks[0]{status}, 200, "$what: the MDM server answered 200")
        if @checks;
    is(scalar(grep { $_->{uri} !~ m{^/devices/} } $t->upstream_requests),
        $others, "$what: the GetToken itself did not reach the MDM server");
    cached_ok($what, $known, 'enrolled', 3600);

    answered('the next GetToken of that phone', $known);
    is(scalar(() = checks_of($known)), 1,
        'the next GetToken of that phone was answered from the cache,'
        . ' without asking the MDM server again');
}

# phones the MDM server does not know

{
    my $what = 'a GetToken of a phone the MDM server answers 404';
    refused($what, $stranger);
    my @checks = checks_of($stranger);
    is(scalar @checks, 1, "$what: the MDM server was asked once");
    is($checks[0]{status}, 404, "$what: the MDM server answered 404")
        if @checks;
    cached_ok($what, $stranger, 'unknown', 3600);

    refused('the next GetToken of that phone', $stranger);
    is(scalar(() = checks_of($stranger)), 1,
        'the next GetToken of that phone was refused from the cache');

    $what = 'a GetToken of a phone the MDM server answers 403';
    refused($what, $forbidden);
    is(scalar(() = checks_of($forbidden)), 1,
        "$what: the MDM server was asked once");
    is($t->redis('GET', check_key($forbidden)), 'unknown',
        "$what: the cache says unknown");

    # a check that fails says nothing about the phone: not cached
    $what = 'a GetToken of a phone whose check fails with 502';
    my $mark = $t->log_mark;
    my ($res, $st) = get_token_of($failing);
    is($res->{status}, 503, "$what is answered 503")
        or diag(MdmWatch::Test::describe($res));
    ok(defined $res->{headers}{'retry-after'}, "$what: with Retry-After");
    is($t->redis('GET', "mdm_watch:security_token:$st"), $watch,
        "$what: the security token is still there");
    is($t->redis('EXISTS', check_key($failing)), 0,
        "$what: nothing is cached");
    $t->log_like(qr/\[error\][^\n]*phone check of "\Q$failing\E" failed/,
        "$what: the failed check is logged at error", $mark);
    ($res) = get_token_of($failing);
    is(scalar(() = checks_of($failing)), 2,
        "$what: the next GetToken asks the MDM server again");
}

# the UDID in upper case

{
    my $what = 'a GetToken of a lower-case phone UDID';
    answered($what, $lower);
    is(scalar(() = checks_of($lower)), 1,
        "$what: the MDM server was asked about the upper-case UDID");
    is_deeply([$t->redis_keys('mdm_watch:phone_check:' . $lower)], [],
        "$what: nothing is cached under the lower-case UDID");
    is($t->redis('GET', check_key($lower)), 'enrolled',
        "$what: the cache is kept under the upper-case UDID");
}

# a recorded phone needs no subrequest, and the record beats the cache

{
    my $what = 'a GetToken of a phone the module has recorded';
    answered($what, $phone);
    is(scalar(() = checks_of($phone)), 0,
        "$what: the MDM server was not asked");
    is($t->redis('EXISTS', check_key($phone)), 0,
        "$what: nothing is cached for it");

    $what = 'a phone the cache says unknown';
    my $res = $t->enroll_phone(udid => $stranger);
    ok($res->{recorded}, "$what sends a TokenUpdate the MDM server accepts,"
        . ' and is recorded');
    answered("$what, once recorded,", $stranger);
    is(scalar(() = checks_of($stranger)), 1,
        "$what, once recorded: the MDM server was not asked again");
}

# mdm_watch_phone_check_valid

{
    $t->write_config(config("    mdm_watch_phone_check_valid soon;\n"));
    my ($code, $out) = $t->nginx_test;
    isnt($code, 0, 'mdm_watch_phone_check_valid that is no time: nginx -t'
        . ' fails');
    like($out, qr/\[emerg\][^\n]*mdm_watch_phone_check_valid/,
        '... naming the directive') or diag($out);

    $t->stop_nginx;
    $t->write_config(config("    mdm_watch_phone_check_valid 2s;\n"));
    $t->start_nginx;
    $t->flush_redis;

    my $what = 'with mdm_watch_phone_check_valid 2s, a GetToken';
    my $before = () = checks_of($known);
    answered($what, $known);
    is(scalar(() = checks_of($known)), $before + 1,
        "$what: the MDM server was asked");
    my $ttl = $t->redis_ttl(check_key($known));
    ok($ttl > 0 && $ttl <= 2, "$what: the answer is cached for 2s")
        or diag("TTL $ttl");
    answered("$what again at once", $known);
    is(scalar(() = checks_of($known)), $before + 1,
        "$what again at once: the cache answered");

    sleep 3;
    answered("$what 3s later", $known);
    is(scalar(() = checks_of($known)), $before + 2,
        "$what 3s later: the MDM server was asked again");
}

# the security token is checked before the phone: a GetToken with an
# unknown one makes no subrequest and stores nothing

{
    my $udid = '00008110-0000000000000B0D';
    my $what = 'a GetToken of an unknown phone with an unknown security token';
    my $res = $t->get_token_response(udid => $udid, watch_udid => $watch,
        security_token => MdmWatch::Test::random_uuid());
    is($res->{status}, 403, "$what is answered 403");
    is(scalar(() = checks_of($udid)), 0, "$what: asks the MDM server nothing");
    is($t->redis('EXISTS', check_key($udid)), 0, "$what: stores nothing");
}

# a CheckOut the MDM server accepts drops the stored answer with the
# device record: the phone is asked about again

{
    my $what = 'a CheckOut of a phone the phone check found enrolled';
    answered("before $what", $known);
    is($t->redis('GET', check_key($known)), 'enrolled',
        "before $what: the cache says enrolled");
    my $res = $t->checkin(MdmWatch::Message::check_out(udid => $known));
    is($res->{status}, 200, "$what is passed to the MDM server");
    $t->registry_barrier;
    is($t->redis('EXISTS', check_key($known)), 0,
        "$what: the stored answer is gone");
}

# without Redis, 503 as for any GetToken

$t->stop_redis;
my $res = $t->get_token_response(udid => $known, watch_udid => $watch,
    security_token => MdmWatch::Test::random_uuid());
is($res->{status}, 503, 'with Redis stopped, a GetToken is answered 503');
$t->start_redis;

$t->finish;
