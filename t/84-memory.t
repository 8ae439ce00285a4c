#!/usr/bin/perl

# The worker's memory stays flat: after a warm-up of mixed requests
# (pairings from start to end, challenges, GetTokens known and unknown,
# check-ins passed on, hostile inputs from t/hostile, Redis going away
# and coming back), as many requests again leave its resident size
# (VmRSS) within 5% or 400 kB, whichever is larger.  The mix includes
# large inputs, so that a copy leaked per request would show.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Message qw(get_token token_update sign machine_info);
use MdmWatch::Test;

my $ROUNDS = 220;           # of about 7.5 requests each, per half

my $corpus = "$FindBin::Bin/hostile";
plan skip_all => 'no corpus: run perl t/hostile/generate.pl'
    unless -f "$corpus/MANIFEST";
plan skip_all => 'under a sanitizer or valgrind, the resident size is the'
    . ' tool\'s; their leak checks cover the module'
    if $ENV{TEST_NGINX_SANITIZED};

my $t = MdmWatch::Test->new;

# the test CA and the corpus CA, both trusted
my $cas = $t->dir . '/trusted.pem';
MdmWatch::Test::spew($cas, MdmWatch::Test::slurp($t->pki->ca_file)
    . MdmWatch::Test::slurp("$corpus/pki/ca.pem"));

$t->start_redis;
$t->start_upstream;
$t->write_config($t->default_http(trusted_certificate => $cas,
    http => "    error_log %%TMP%%/error.log warn;\n"));
$t->start_nginx;

my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';

# the module answers the GetToken of a phone it has recorded
$t->enroll_phone_ok($phone);
my $mi = $t->machine_info_body(UDID => $watch);
my ($worker) = $t->wait_workers(1);

my @hostile = map { [$_, MdmWatch::Test::slurp("$corpus/$_")] } qw(
    enroll-cms-truncated-half.der
    enroll-signed-by-untrusted-ca.der
    enroll-content-altered.der
    enroll-udid-65-chars.der
    enroll-plist-deep-nesting.der
    enroll-plist-5000-keys.der
    enroll-1000-keys.der
    enroll-pairing-token-60k.der
    enroll-binary-plist-self-reference.der
    enroll-binary-plist-shared-subtree-million-nodes.der
    enroll-doctype-entity-expansion.der
    checkin-gettoken-entities.xml
    checkin-gettoken-1000-keys.xml
    checkin-deep-nesting.xml
    checkin-binary-plist-cyclic.bplist
    checkin-gettoken-5000-keys.xml
);

my %count;

sub count {
    my ($res) = @_;
    $count{ $res->{status} // 'none' }++;
    return $res;
}

sub hostile {
    my ($i) = @_;
    my ($name, $body) = @{ $hostile[$i % @hostile] };
    return $name =~ /^enroll/ ? $t->enroll(body => $body)
                              : $t->checkin($body);
}

# one round: a challenge and its GetToken, an unknown security token,
# a check-in and a plain request passed on, two hostile inputs; every
# tenth round a whole pairing, which signs machine info afresh
sub round {
    my ($i) = @_;
    my $st = MdmWatch::Test::challenge_token(count($t->enroll(body => $mi)));
    my $res = count($t->get_token_response(udid => $phone,
        security_token => $st // '', watch_udid => $watch));
    count($t->get_token_response(udid => $phone, watch_udid => $watch,
        security_token => MdmWatch::Test::random_uuid()));
    count($t->checkin(token_update(udid => $watch)));
    count($t->request(uri => '/mdm/server'));
    count(hostile(2 * $i));
    count(hostile(2 * $i + 1));

    if ($i % 10 == 0 && ($res->{status} // 0) == 200) {
        my $token = MdmWatch::Message::parse_token_data($res->{body});
        count($t->enroll(UDID => $watch, PAIRING_TOKEN => $token // ''));
    }
}

# Redis gone for a while: the 503 path and the reconnections
sub without_redis {
    $t->stop_redis;
    count($t->enroll(body => $mi)) for 1 .. 30;
    count(hostile($_)) for 0 .. 15;
    $t->start_redis;

    my $deadline = time + 7;
    while (time < $deadline) {
        last if defined MdmWatch::Test::challenge_token(
            count($t->enroll(body => $mi)));
        sleep 0.05;
    }

    # the new Redis is empty
    $t->enroll_phone_ok($phone);
}

sub half {
    my $start = time;
    my $before = 0;
    $before += $_ for values %count;

    for my $i (1 .. $ROUNDS) {
        round($i);
        without_redis() if $i == $ROUNDS / 2;
        $t->flush_redis if $i % 40 == 0;
    }

    my $n = -$before;
    $n += $_ for values %count;
    sleep 0.2;
    return ($n, time - $start, MdmWatch::Test::rss_kb($worker));
}

my ($n1, $s1, $warm) = half();
my ($n2, $s2, $after) = half();

note(sprintf 'warm-up: %d requests in %.1fs, VmRSS %d kB', $n1, $s1, $warm);
note(sprintf 'then: %d requests in %.1fs, VmRSS %d kB', $n2, $s2, $after);
note('answers: ' . join ', ', map { "$_ x$count{$_}" } sort keys %count);

cmp_ok($n2, '>=', 1500, "the second half made $n2 requests");
ok(!$count{none}, 'every request was answered');
ok(($count{200} // 0) > 1000 && ($count{403} // 0) > 500
    && ($count{400} // 0) > 100 && ($count{503} // 0) > 50,
    'the mix had successes, challenges and refusals, bad requests and 503');

my $bound = $warm * 0.05 > 400 ? int($warm * 0.05) : 400;
cmp_ok($after - $warm, '<', $bound, "after $n2 more requests the worker"
    . " grew by less than $bound kB (from $warm kB to $after kB)");

is(join(' ', $t->wait_workers(1)), $worker, 'the worker process is the same');
is(scalar(() = $t->crashes), 0, 'no worker exited on a signal');

$t->finish;
