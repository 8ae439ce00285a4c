#!/usr/bin/perl

# The configuration: what "nginx -t" accepts, what it refuses and how it
# says so, and what "mdm_watch_verify_machine_info off" changes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Message qw(machine_info sign);
use MdmWatch::Test;

my $t = MdmWatch::Test->new;
my $dir = $t->dir;

sub config_ok {
    my ($name, %o) = @_;
    $t->write_config($t->default_http(%o));
    my ($code, $out) = $t->nginx_test;
    is($code, 0, $name) or diag($out);
    return $out;
}

sub config_fails {
    my ($name, $why, %o) = @_;
    $t->write_config($t->default_http(%o));
    my ($code, $out) = $t->nginx_test;
    isnt($code, 0, "$name: nginx -t fails");
    like($out, qr/\[emerg\]/, "$name: nginx -t reports an emergency");
    like($out, $why, "$name: the message says what is wrong") or diag($out);
}

# the README's example

my $out = config_ok('the example configuration passes nginx -t');
like($out, qr/syntax is ok/, 'nginx -t finds the syntax of the example ok');
like($out, qr/test is successful/, 'nginx -t reports the test successful');

# the secret

config_fails('without mdm_watch_secret', qr/mdm_watch_secret/,
    secret => undef);

config_fails('with a secret file that does not exist',
    qr{\Q$dir\E/no-such-secret}, secret => '%%TMP%%/no-such-secret');

mkdir "$dir/secret-folder";
config_fails('with a folder as the secret file',
    qr{\Q$dir\E/secret-folder}, secret => '%%TMP%%/secret-folder');

MdmWatch::Test::spew("$dir/empty-secret", '');
config_fails('with an empty secret file',
    qr{mdm_watch_secret|\Q$dir\E/empty-secret},
    secret => '%%TMP%%/empty-secret');

MdmWatch::Test::spew("$dir/short-secret", 'k' x 31);
config_fails('with a secret of 31 bytes',
    qr{(?=.*(?:mdm_watch_secret|\Q$dir\E/short-secret))
       (?=.*(?:\b32\b|short))}xi,
    secret => '%%TMP%%/short-secret');

MdmWatch::Test::spew("$dir/secret-32", 'k' x 32);
config_ok('a secret of exactly 32 bytes is accepted',
    secret => '%%TMP%%/secret-32');

# the trusted certificate

config_fails('with verification on and no mdm_watch_trusted_certificate',
    qr/mdm_watch_trusted_certificate/, trusted_certificate => undef);

config_fails('with a trusted certificate file that does not exist',
    qr{\Q$dir\E/no-such-ca\.pem},
    trusted_certificate => '%%TMP%%/no-such-ca.pem');

MdmWatch::Test::spew("$dir/not-a-ca.pem", "this is no certificate\n");
config_fails('with a trusted certificate file that holds no certificate',
    qr{mdm_watch_trusted_certificate|\Q$dir\E/not-a-ca\.pem},
    trusted_certificate => '%%TMP%%/not-a-ca.pem');

config_ok('verification off needs no trusted certificate',
    verify => 'off', trusted_certificate => undef);

# values nginx parses itself

config_fails('with a token ttl that is no time', qr/mdm_watch_token_ttl/,
    token_ttl => 'soon');

config_fails('with a Redis timeout that is no time',
    qr/mdm_watch_redis_timeout/, redis_timeout => 'soon');

config_fails('with mdm_watch_verify_machine_info neither on nor off',
    qr/mdm_watch_verify_machine_info/, verify => 'maybe');

# the phone check

config_fails('with a variable in the URI of mdm_watch_phone_check',
    qr/mdm_watch_phone_check.*fixed URI.*\$mdm_watch_phone_udid/,
    checkin => "            mdm_watch_phone_check /phone-check/"
        . "\$mdm_watch_phone_udid;\n");

config_fails('with a phone check URI that is no URI',
    qr/invalid URI "phone-check"/,
    checkin => "            mdm_watch_phone_check phone-check;\n");

# verification off, running

$t->start_redis;
$t->start_upstream;
$t->write_config($t->default_http(verify => 'off',
    trusted_certificate => undef));
$t->start_nginx;

$t->log_like(qr/\[warn\][^\n]*mdm_watch_verify_machine_info/,
    'starting with verification off logs a warning naming the directive');

my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';

# the module answers the GetToken of a phone it has recorded
$t->enroll_phone_ok($phone);

my $res = $t->enroll(signer => 'rogue_watch', UDID => $watch);
my $st = $t->challenge_ok($res,
    'with verification off, machine info signed under an untrusted CA is'
    . ' challenged, not refused');
is($t->redis('GET', "mdm_watch:security_token:" . ($st // '')), $watch,
    'the security token is stored for the watch');

$res = $t->enroll(signer => 'self_signed', UDID => $watch);
$t->challenge_ok($res,
    'with verification off, self-signed machine info is challenged too');

my $token = $t->get_token(udid => $phone, security_token => $st,
    watch_udid => $watch);
ok(defined $token && length $token, 'the phone gets a pairing token');

my $before = $t->upstream_count;
$res = $t->enroll(signer => 'rogue_watch', UDID => $watch,
    PAIRING_TOKEN => $token // '');
is($res->{status}, 200,
    'with verification off, rogue-signed machine info with a valid pairing'
    . ' token is passed to the MDM server')
    or diag(MdmWatch::Test::describe($res));
is($t->upstream_count, $before + 1,
    'the MDM server received the enrollment');
is($t->redis('HGET', "mdm_watch:pair:$watch", 'phone_udid'), $phone,
    'the pair is recorded');

$t->finish;
