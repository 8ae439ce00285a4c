#!/usr/bin/perl

# The whole pairing, as a watch and its phone go through it: challenge,
# GetToken, enrollment with the pairing token; then what happens to a
# pairing token used twice, for another watch, or too late; and what the
# access log shows at each step.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);

use MdmWatch::Message qw(machine_info);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup;
my $watch = $t->pki->udid;
my $other_watch = $t->pki->other_udid;
my $phone = '00008110-000A1B2C3D4E5F60';
my $enroll = $MdmWatch::Test::ENROLL_URI;
my $checkin = $MdmWatch::Test::CHECKIN_URI;

# the profile the MDM server gives, asked directly
my $direct = $t->request(port => $t->port('upstream'), method => 'POST',
    uri => $enroll, body => 'x');
my $profile = $direct->{body};
like($profile, qr/com\.apple\.mdm\.token/,
    'the stand-in serves a profile (asked directly)');

sub pairing_keys { $t->redis_keys('mdm_watch:pairing_token:*') }

# 1. the watch is challenged

my $t0 = time;
my $res = $t->enroll(uri => "$enroll?step=challenge", UDID => $watch);
my $st = $t->challenge_ok($res,
    'a watch that enrolls without a pairing token is challenged');
my $log = $t->access_entry("$enroll?step=challenge");
is($log->{action}, 'challenge', 'the access log shows the action challenge');
is($log->{udid}, $watch, 'the access log shows the watch UDID');

# 2. the phone asks for a pairing token

$res = $t->get_token_response(uri => "$checkin?step=token", udid => $phone,
    security_token => $st, watch_udid => $watch);
is($res->{status}, 200, 'the phone gets a pairing token for the watch');
my $token = MdmWatch::Message::parse_token_data($res->{body});
ok(defined $token && length $token, 'the answer carries TokenData');
$log = $t->access_entry("$checkin?step=token");
is($log->{action}, 'token', 'the access log shows the action token');
is($log->{type}, 'GetToken', 'the access log shows the message type GetToken');
is($log->{upstream}, '-', 'the access log shows no upstream for GetToken');

# 3. the watch enrolls with the pairing token

my $body = $t->machine_info_body(UDID => $watch, PAIRING_TOKEN => $token);
my $before = $t->upstream_count;
$res = $t->enroll(uri => "$enroll?step=paired", body => $body,
    headers => [['User-Agent', 'MDM-Watch-Test/1.0'],
        ['X-Paired-Phone-UDID', 'SPOOFED-BY-THE-CLIENT']]);

is($res->{status}, 200, 'the watch with a valid pairing token is enrolled')
    or diag(MdmWatch::Test::describe($res));
is($res->{headers}{'content-type'}, 'application/x-apple-aspen-config',
    'the answer is the profile type of the MDM server');
ok($res->{body} eq $profile, 'the profile of the MDM server comes back whole');
ok(exists $res->{headers}{'x-standin-request'},
    'the answer comes from the MDM server');

my @up = $t->upstream_requests;
is(scalar @up, $before + 1, 'the MDM server received one request');
$t->passed_ok($up[$before], method => 'POST', uri => "$enroll?step=paired",
    body => $body,
    headers => [['Content-Type', 'application/pkcs7-signature'],
        ['User-Agent', 'MDM-Watch-Test/1.0']],
    name => 'the MDM server received the machine info byte for byte');
is($up[$before]{header}{'x-paired-phone-udid'}, $phone,
    'the MDM server learns the paired phone from X-Paired-Phone-UDID,'
    . ' and only from nginx');

is_deeply([pairing_keys()], [], 'the pairing token is used up');
is_deeply([$t->redis_keys('mdm_watch:security_token:*')], [],
    'no security token is left');
my $pair = $t->redis_hash("mdm_watch:pair:$watch");
my $paired_at = delete $pair->{paired_at} // '';
is_deeply($pair, {
    watch_udid => $watch,
    phone_udid => $phone,
    serial     => 'WTCHSERIAL01',
    product    => 'Watch7,1',
    version    => '21R355',
    os_version => '10.0',
    state      => 'paired',
}, 'Redis records the pair with the machine info of the watch');
ok($paired_at =~ /^\d+$/ && $paired_at >= $t0 - 1 && $paired_at <= time + 1,
    'the pair records when it was made, in unix seconds')
    or diag("paired_at '$paired_at'");
is($t->redis_ttl("mdm_watch:pair:$watch"), -1, 'the pair does not expire');
is_deeply([$t->redis_members("mdm_watch:phone:$phone")], [$watch],
    'the phone lists the watch');

$log = $t->access_entry("$enroll?step=paired");
is($log->{action}, 'paired', 'the access log shows the action paired');
is($log->{udid}, $watch, 'the access log shows the watch');
is($log->{phone}, $phone, 'the access log shows the phone');

# the same pairing token again

sub challenged_again {
    my ($what, %o) = @_;
    my $before = $t->upstream_count;
    my $mark = $t->log_mark;
    my @pairs = $t->redis_keys('mdm_watch:pair:*');

    my $res = $t->enroll(%o);
    my $st = $t->challenge_ok($res, "$what is answered with a new challenge");
    is($t->upstream_count, $before, "$what: nothing reached the MDM server");
    is_deeply([$t->redis_keys('mdm_watch:pair:*')], \@pairs,
        "$what: no pair is recorded");
    ok($st && $t->redis('EXISTS', "mdm_watch:security_token:$st"),
        "$what: the new security token is in Redis");
    $t->log_like(qr/\[warn\][^\n]*pairing token/i,
        "$what: the error log warns about the pairing token", $mark);
    return $st;
}

challenged_again('the same enrollment sent again', body => $body);
is($t->redis('HGET', "mdm_watch:pair:$watch", 'paired_at'), $paired_at,
    'the pair is as it was');

# a pairing token made for another watch

$st = $t->challenge(UDID => $watch);
my $watch_token = $t->get_token(udid => $phone, security_token => $st,
    watch_udid => $watch);
ok(defined $watch_token, 'the phone gets a second pairing token');
challenged_again('another watch with the pairing token of the first',
    signer => 'other_watch', UDID => $other_watch,
    PAIRING_TOKEN => $watch_token // '');
is($t->redis('EXISTS', "mdm_watch:pair:$other_watch"), 0,
    'the other watch is not paired');

# a second watch pairs with the same phone

$st = $t->challenge(signer => 'other_watch', UDID => $other_watch);
my $other_token = $t->get_token(udid => $phone, security_token => $st,
    watch_udid => $other_watch);
$res = $t->enroll(signer => 'other_watch', UDID => $other_watch,
    PAIRING_TOKEN => $other_token // '');
is($res->{status}, 200, 'a second watch of the same phone is enrolled');
is_deeply([$t->redis_members("mdm_watch:phone:$phone")],
    [sort $watch, $other_watch], 'the phone lists both watches');

# UDIDs in lower case all along

my $lower = lc '00008301-00AA11BB22CC33DD';
$st = $t->challenge(UDID => $lower);
my $lower_token = $t->get_token(udid => lc $phone, phone_udid => lc $phone,
    security_token => $st, watch_udid => $lower);
ok(defined $lower_token, 'a lower-case watch and phone get a pairing token');
$res = $t->enroll(UDID => $lower, PAIRING_TOKEN => $lower_token // '');
is($res->{status}, 200, 'the lower-case watch is enrolled')
    or diag(MdmWatch::Test::describe($res));
is($t->redis('HGET', 'mdm_watch:pair:' . uc $lower, 'watch_udid'), uc $lower,
    'the pair is recorded under the upper-case UDID');
is($t->redis('HGET', 'mdm_watch:pair:' . uc $lower, 'phone_udid'), $phone,
    'the phone of the pair is in upper case');
ok(scalar(grep { $_ eq uc $lower }
    $t->redis_members("mdm_watch:phone:$phone")),
    'the upper-case phone lists the watch in upper case');

# what the MDM server answers is what the watch gets

my $sized = 'Watch7,3';
$st = $t->challenge(UDID => '00008301-0000000000000A01');
$token = $t->get_token(udid => $phone, security_token => $st,
    watch_udid => '00008301-0000000000000A01');
$res = $t->enroll(UDID => '00008301-0000000000000A01', PRODUCT => $sized,
    PAIRING_TOKEN => $token // '',
    headers => [['X-Standin-Profile-Size', 300_000]]);
is($res->{status}, 200, 'a watch with a large profile is enrolled');
is(length $res->{body}, 300_000, 'the large profile comes back whole');

$st = $t->challenge(UDID => '00008301-0000000000000A02');
$token = $t->get_token(udid => $phone, security_token => $st,
    watch_udid => '00008301-0000000000000A02');
$res = $t->enroll(UDID => '00008301-0000000000000A02',
    PAIRING_TOKEN => $token // '', headers => [['X-Standin-Status', 500]]);
is($res->{status}, 500, 'an error of the MDM server reaches the watch');
ok(exists $res->{headers}{'x-standin-request'},
    'the error answer is the one of the MDM server');

# the other actions in the access log

$res = $t->enroll(uri => "$enroll?step=reject", signer => 'rogue_watch');
is($res->{status}, 403, 'machine info under an untrusted CA is refused');
$log = $t->access_entry("$enroll?step=reject");
is($log->{action}, 'reject:untrusted_signer',
    'the access log shows the action reject with its reason');

$res = $t->checkin(MdmWatch::Message::token_update(udid => $watch),
    uri => "$checkin?step=pass");
is($res->{status}, 200, 'a TokenUpdate is answered by the MDM server');
$log = $t->access_entry("$checkin?step=pass");
is($log->{action}, 'pass', 'the access log shows the action pass');
is($log->{type}, 'TokenUpdate', 'the access log shows the message type');

$res = $t->request(uri => '/other?step=none');
is($res->{status}, 200, 'a request elsewhere is answered');
$log = $t->access_entry('/other?step=none');
is($log->{action}, '-', 'outside the module, the action is empty');

# tokens that expire: a second nginx with mdm_watch_token_ttl 2s

$t->stop_nginx;
$t->write_config($t->default_http(token_ttl => '2s'));
$t->start_nginx;
$t->flush_redis;

$st = $t->challenge(UDID => $watch);
my $st_ttl = $t->redis_ttl("mdm_watch:security_token:" . ($st // '?'));
ok($st_ttl > 0 && $st_ttl <= 2, 'with a ttl of 2s, the security token lives'
    . ' 2 seconds in Redis') or diag("TTL $st_ttl");
$token = $t->get_token(udid => $phone, security_token => $st,
    watch_udid => $watch);
ok(defined $token, 'the phone gets a pairing token in time');
my ($key) = pairing_keys();
my $pt_ttl = $key ? $t->redis_ttl($key) : -2;
ok($pt_ttl > 0 && $pt_ttl <= 2, 'the pairing token lives 2 seconds in Redis')
    or diag("TTL $pt_ttl");

my $late_st = $t->challenge(UDID => $other_watch, signer => 'other_watch');
ok(defined $late_st, 'another watch is challenged');

sleep 3;

challenged_again('a pairing token used after its ttl', UDID => $watch,
    PAIRING_TOKEN => $token // '');
$res = $t->get_token_response(udid => $phone, security_token => $late_st,
    watch_udid => $other_watch);
is($res->{status}, 403, 'a security token used after its ttl is refused');

$t->finish;
