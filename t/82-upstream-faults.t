#!/usr/bin/perl

# An MDM server that fails behind a paired enrollment, played by
# t/lib/fake-mdm.pl: it resets the connection, closes it, stalls past
# proxy_read_timeout or answers garbage.  The watch gets nginx's own 502
# or 504, and the pairing token is spent all the same: the module
# consumed it and recorded the pair before the MDM server was asked (a
# documented limitation), so the watch's retry is challenged again.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(time);

use MdmWatch::Message qw(token_update);
use MdmWatch::Test;

my $t = MdmWatch::Test->new;
$t->start_redis;
$t->start_fake_mdm;
$t->write_config($t->default_http(
    enroll  => "            proxy_read_timeout 1s;\n",
    checkin => "            proxy_read_timeout 1s;\n"));
$t->start_nginx;

my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';
my ($worker) = $t->wait_workers(1);

# the module answers the GetToken of a phone it has recorded
$t->enroll_phone_ok($phone);

# a watch with a pairing token: the machine info that carries it
sub paired_body {
    my $st = $t->challenge(UDID => $watch) // die 'no challenge';
    my $token = $t->get_token(udid => $phone, security_token => $st,
        watch_udid => $watch) // die 'no pairing token';
    return $t->machine_info_body(UDID => $watch, PAIRING_TOKEN => $token);
}

sub token_spent {
    my ($what, $body, $before) = @_;

    my @seen = $t->fake_mdm_requests;
    my $got = $seen[$before];
    ok($got && $got->{method} eq 'POST'
        && $got->{uri} eq $MdmWatch::Test::ENROLL_URI
        && $got->{body_sha256} eq sha256_hex($body)
        && $got->{phone} eq $phone,
        "$what: the MDM server received the enrollment, with the phone")
        or diag(explain($got));

    is_deeply([$t->redis_keys('mdm_watch:pairing_token:*')], [],
        "$what: the pairing token is consumed");
    is($t->redis_hash("mdm_watch:pair:$watch")->{phone_udid}, $phone,
        "$what: the pair is recorded");
    is_deeply([$t->redis_members("mdm_watch:phone:$phone")], [$watch],
        "$what: the phone's set holds the watch");

    $t->challenge_ok($t->enroll(body => $body),
        "$what: the watch's retry with the same token is challenged");
}

sub worker_survives {
    my ($what) = @_;
    is(join(' ', $t->wait_workers(1)), $worker,
        "$what: the worker process is the same");
    is(scalar(() = $t->crashes), 0, "$what: no worker exited on a signal");
}

my %faults = (
    reset          => [502, 'resetting the connection'],
    close          => [502, 'closing the connection without an answer'],
    'garbage-header' => [502, 'answering a header line without a colon'],
);

for my $fault (sort keys %faults) {
    my ($status, $how) = @{ $faults{$fault} };
    my $what = "an MDM server $how";
    $t->flush_redis;
    my $body = paired_body();
    my $before = () = $t->fake_mdm_requests;

    my $res = $t->enroll(body => $body, headers => [['X-Fault', $fault]],
        timeout => 5);
    is($res->{status}, $status,
        "$what: a paired watch gets nginx's $status, the token consumed")
        or diag(MdmWatch::Test::describe($res));
    cmp_ok($res->{elapsed}, '<', MdmWatch::Test::slow(0.5), "$what: at once");
    token_spent($what, $body, $before);
    worker_survives($what);
}

# stalled past proxy_read_timeout (1s): 504, and the worker serves
# others meanwhile

{
    my $what = 'an MDM server that never answers';
    $t->flush_redis;
    my $body = paired_body();
    my $before = () = $t->fake_mdm_requests;

    my $h = $t->send_request(method => 'POST',
        uri => $MdmWatch::Test::ENROLL_URI, body => $body, timeout => 5,
        headers => [['Content-Type', $MdmWatch::Test::CMS_TYPE],
            ['X-Fault', 'stall']]);
    my $st = $t->challenge(UDID => $watch, timeout => 3);
    ok(defined $st, "$what: meanwhile another watch is challenged");

    my $res = $t->read_response($h, 5);
    is($res->{status}, 504,
        "$what: a paired watch gets nginx's 504, the token consumed")
        or diag(MdmWatch::Test::describe($res));
    cmp_ok($res->{elapsed}, '>=', 0.95, "$what: after proxy_read_timeout");
    cmp_ok($res->{elapsed}, '<', MdmWatch::Test::slow(2.5),
        "$what: and soon after it");
    $t->redis('DEL', "mdm_watch:security_token:$st") if defined $st;
    token_spent($what, $body, $before);
    worker_survives($what);
}

# what nginx 1.22 itself does with two more kinds of garbage

{
    my $what = 'an MDM server answering bytes without a status line';
    $t->flush_redis;
    my $body = paired_body();
    my $before = () = $t->fake_mdm_requests;

    my $res = $t->enroll(body => $body, headers => [['X-Fault', 'garbage']],
        timeout => 5);
    my $garbage = join '', map { chr((($_ * 37) + 11) % 256) } 1 .. 600;
    ok(!defined $res->{status} && $res->{raw} eq $garbage,
        "$what: nginx 1.22 relays them as an HTTP/0.9 answer, no status"
        . ' (nginx\'s behaviour, not the module\'s), the token consumed')
        or diag(MdmWatch::Test::describe($res));
    token_spent($what, $body, $before);
    worker_survives($what);
}

{
    my $what = 'an MDM server closing the connection inside the profile';
    $t->flush_redis;
    my $body = paired_body();
    my $before = () = $t->fake_mdm_requests;
    my $mark = $t->log_mark;

    my $res = $t->enroll(body => $body,
        headers => [['X-Fault', 'truncated']], timeout => 5);
    is($res->{status}, 200, "$what: the header was sent, so the watch gets"
        . ' 200 with a short body, the token consumed');
    is($res->{error}, 'short body', "$what: the body is 10 of 1000 bytes");
    $t->log_like(qr/upstream prematurely closed/,
        "$what: the error log says so", $mark);
    token_spent($what, $body, $before);
    worker_survives($what);
}

# a check-in passed through to a failing MDM server: 502, Redis untouched

{
    my $what = 'a TokenUpdate to an MDM server resetting the connection';
    $t->flush_redis;
    $t->challenge(UDID => $watch);
    my $snapshot = $t->redis_snapshot;
    my $res = $t->checkin(token_update(udid => $watch),
        headers => [['X-Fault', 'reset']], timeout => 5);
    is($res->{status}, 502, "$what is answered 502");
    ok($t->registry_barrier, "$what: the module records again after it");
    $t->redis_unchanged_ok($snapshot, "$what: Redis is unchanged, the"
        . ' device not recorded');
    worker_survives($what);
}

$t->finish;
